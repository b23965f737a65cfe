package devices

// LineControl is true: settings, DTR/RTS and BREAK go to the tty (a pty
// has no modem lines; those calls then fail with ErrNotSupported).
func (d *serialDevice) LineControl() bool { return true }
