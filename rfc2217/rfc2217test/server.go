package rfc2217test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/telnet"
)

// Device is the serial line behind a test access server: bytes from the
// client are written to it, bytes read from it go to the client. It needs
// SetReadDeadline so that ServeConn can stop its reader (net.Conn and a
// pollable *os.File, such as a pty, have it).
type Device interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
}

// ServerOptions configure ServeConn.
type ServerOptions struct {
	Logger    *slog.Logger // nil discards
	Signature string       // answer to an empty SIGNATURE; "" = rfc2217.DefaultServerSignature

	// Device carries the data; nil discards the client's data and sends none.
	Device Device

	// PollModem is how often the port's modem state is read and notified
	// to the client (pyserial's server does it every second). Zero: only
	// once, when COM-PORT-OPTION is agreed.
	PollModem time.Duration

	// SendDO makes the server start COM-PORT-OPTION itself with DO 44, as
	// ser2net and sredird do. Otherwise it waits for the client's WILL 44.
	SendDO bool
}

// ServeConn serves one RFC 2217 client on conn in front of port, like a
// tiny ser2net: it negotiates BINARY, SGA and COM-PORT-OPTION, hands every
// COM-PORT-OPTION subnegotiation to an rfc2217.AccessServer, copies data
// between conn and opts.Device, and sends modem-state notifications. It
// returns when the client leaves, the connection fails or ctx is done
// (then with ctx.Err()), after closing conn and stopping its goroutines.
func ServeConn(ctx context.Context, conn net.Conn, port rfc2217.Port, opts ServerOptions) error {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &server{conn: conn, port: port, log: log, srv: rfc2217.NewAccessServer(opts.Signature)}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		conn.Close()
		if opts.Device != nil {
			opts.Device.SetReadDeadline(time.Unix(1, 0))
		}
		wg.Wait()
		if opts.Device != nil {
			opts.Device.SetReadDeadline(time.Time{})
		}
	}()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()

	var greet []byte
	s.mu.Lock()
	greet = s.neg.Enable(greet, telnet.Local, telnet.Binary)
	greet = s.neg.Enable(greet, telnet.Remote, telnet.Binary)
	greet = s.neg.Enable(greet, telnet.Local, telnet.SuppressGA)
	greet = s.neg.Enable(greet, telnet.Remote, telnet.SuppressGA)
	s.neg.Accept(telnet.Local, telnet.ComPort, true)
	if opts.SendDO {
		greet = s.neg.Enable(greet, telnet.Remote, telnet.ComPort)
	} else {
		s.neg.Accept(telnet.Remote, telnet.ComPort, true)
	}
	s.mu.Unlock()
	if err := s.write(greet); err != nil {
		return err
	}

	if opts.Device != nil {
		wg.Go(func() { s.deviceToClient(ctx, opts.Device) })
	}
	if opts.PollModem > 0 {
		wg.Go(func() { s.pollModem(ctx, opts.PollModem) })
	}
	err := s.clientToDevice(ctx, opts.Device)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

type server struct {
	conn net.Conn
	port rfc2217.Port
	log  *slog.Logger

	wmu sync.Mutex // serialises conn.Write

	mu  sync.Mutex // guards neg, srv, dec.Binary
	neg telnet.Options
	srv *rfc2217.AccessServer
	dec telnet.Decoder // used by clientToDevice only
}

func (s *server) write(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	_, err := s.conn.Write(b)
	return err
}

func (s *server) comPort() bool {
	return s.neg.Enabled(telnet.Remote, telnet.ComPort) || s.neg.Enabled(telnet.Local, telnet.ComPort)
}

func (s *server) clientToDevice(ctx context.Context, dev Device) error {
	buf := make([]byte, 4096)
	for {
		n, err := s.conn.Read(buf)
		if n > 0 {
			var out []byte
			var toDev [][]byte
			s.mu.Lock()
			derr := s.dec.Decode(buf[:n], func(ev telnet.Event) error {
				switch ev.Kind {
				case telnet.EventData:
					toDev = append(toDev, append([]byte(nil), ev.Data...))
				case telnet.EventNegotiation:
					was := s.comPort()
					var ch *telnet.Change
					out, ch = s.neg.Receive(out, ev.Command, ev.Option)
					if ch != nil && ch.Option == telnet.Binary && ch.Side == telnet.Remote {
						s.dec.Binary = ch.Enabled
					}
					if !was && s.comPort() {
						// Like ser2net: report the modem state once agreed.
						m, _ := s.port.ModemState(ctx)
						out = s.srv.Notify(out, 0, m)
					}
				case telnet.EventSubnegotiation:
					if ev.Option != telnet.ComPort {
						return nil
					}
					reply, herr := s.srv.Handle(ctx, ev.Data, s.port)
					if herr != nil {
						s.log.Info("rfc2217test: request", "payload", ev.Data, "err", herr)
					}
					out = append(out, reply...)
				}
				return nil
			})
			s.mu.Unlock()
			if derr != nil {
				return derr
			}
			if err := s.write(out); err != nil {
				return err
			}
			for _, d := range toDev {
				if dev == nil {
					continue
				}
				if _, err := dev.Write(d); err != nil {
					return err
				}
			}
		}
		if err != nil {
			return err
		}
	}
}

func (s *server) deviceToClient(ctx context.Context, dev Device) {
	buf := make([]byte, 4096)
	var out []byte
	for {
		n, err := dev.Read(buf)
		if n > 0 {
			for {
				s.mu.Lock()
				suspended := s.srv.Suspended()
				binary := s.neg.Enabled(telnet.Local, telnet.Binary)
				s.mu.Unlock()
				if !suspended {
					if binary {
						out = telnet.AppendData(out[:0], buf[:n])
					} else {
						out = telnet.AppendText(out[:0], buf[:n])
					}
					break
				}
				select {
				case <-ctx.Done():
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			if s.write(out) != nil {
				return
			}
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, os.ErrDeadlineExceeded) {
				s.log.Info("rfc2217test: device read", "err", err)
			}
			return
		}
	}
}

func (s *server) pollModem(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m, err := s.port.ModemState(ctx)
		if err != nil {
			continue
		}
		s.mu.Lock()
		var out []byte
		if s.comPort() {
			out = s.srv.Notify(nil, 0, m)
		}
		s.mu.Unlock()
		if s.write(out) != nil {
			return
		}
	}
}
