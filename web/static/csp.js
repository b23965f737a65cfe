// Loaded first: records Content-Security-Policy violations, so that a
// page that breaks the policy (and, say, renders an unstyled terminal) is
// caught by the browser tests, not by users.
window.cspViolations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.cspViolations.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || '') + ':' + (e.lineNumber || 0));
});
