package web

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"sync"
)

// static holds the page, our script and styles, and the vendored xterm.js
// browser build with its licences (scripts/vendor-xterm.sh fetches it).
//
//go:embed static
var static embed.FS

// asset is one embedded file, ready to serve.
type asset struct {
	body  []byte
	ctype string
	etag  string

	gzOnce sync.Once
	gz     []byte // gzip-compressed body, made on first use; nil when it would not be smaller
}

// gzipped returns the compressed body, or nil when it is not worth it.
func (f *asset) gzipped() []byte {
	f.gzOnce.Do(func() {
		if len(f.body) <= 1024 {
			return
		}
		var b bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&b, gzip.DefaultCompression)
		zw.Write(f.body)
		zw.Close()
		if b.Len() < len(f.body)*9/10 {
			f.gz = b.Bytes()
		}
	})
	return f.gz
}

// assets are the embedded files by path below static/.
type assets struct{ files map[string]*asset }

func loadAssets() (*assets, error) {
	a := &assets{files: map[string]*asset{}}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		f := &asset{body: body, etag: `"` + base64.RawURLEncoding.EncodeToString(sum[:12]) + `"`}
		ext := path.Ext(p)
		switch {
		case ext == ".js":
			f.ctype = "text/javascript; charset=utf-8"
		case strings.HasPrefix(path.Base(p), "LICENSE") || path.Base(p) == "VERSIONS":
			f.ctype = "text/plain; charset=utf-8"
		default:
			f.ctype = mime.TypeByExtension(ext)
		}
		if f.ctype == "" {
			f.ctype = "application/octet-stream"
		}
		a.files[strings.TrimPrefix(p, "static/")] = f
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("web: embedded assets: %w", err)
	}
	if a.files["index.html"] == nil {
		return nil, fmt.Errorf("web: embedded assets: no index.html")
	}
	return a, nil
}

// serve writes the asset at name: revalidated by ETag (Cache-Control:
// no-cache), gzip-compressed when the browser takes it.
func (a *assets) serve(w http.ResponseWriter, r *http.Request, name string, cache string) {
	f := a.files[name]
	if f == nil {
		http.NotFound(w, r)
		return
	}
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", cache)
	h.Set("ETag", f.etag)
	h.Add("Vary", "Accept-Encoding")
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, f.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	body := f.body
	if acceptsGzip(r) {
		if gz := f.gzipped(); gz != nil {
			h.Set("Content-Encoding", "gzip")
			body = gz
		}
	}
	h.Set("Content-Length", fmt.Sprint(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}

func etagMatch(header, etag string) bool {
	for t := range strings.SplitSeq(header, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == etag || t == "*" {
			return true
		}
	}
	return false
}

func acceptsGzip(r *http.Request) bool {
	for e := range strings.SplitSeq(r.Header.Get("Accept-Encoding"), ",") {
		name, q, _ := strings.Cut(strings.TrimSpace(e), ";")
		if strings.EqualFold(strings.TrimSpace(name), "gzip") && strings.ReplaceAll(strings.TrimSpace(q), " ", "") != "q=0" {
			return true
		}
	}
	return false
}
