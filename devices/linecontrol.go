package devices

// Every kind says whether line control reaches the device from here:
// LineControl reports that line settings, DTR/RTS and BREAK travel to the
// device (a tty, an RFC 2217 server that agreed to COM-PORT-OPTION, an
// NPort whose command port is connected). Consumers (the bridge's status,
// `vspc-bridge probe`) assert for interface{ LineControl() bool }.

// LineControl is false: the line is whatever the device server is
// configured to.
func (f *FixedLine) LineControl() bool { return false }

// LineControl reports whether the server agreed to COM-PORT-OPTION.
func (d *rfc2217Device) LineControl() bool { return d.c.ComPort() }
