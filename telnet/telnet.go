package telnet

import "strconv"

// Command is a telnet command byte (RFC 854), the byte after IAC.
type Command byte

// Telnet commands (RFC 854 and RFC 855).
const (
	SE   Command = 240 // end of subnegotiation parameters
	NOP  Command = 241 // no operation
	DM   Command = 242 // data mark
	BRK  Command = 243 // break
	IP   Command = 244 // interrupt process
	AO   Command = 245 // abort output
	AYT  Command = 246 // are you there
	EC   Command = 247 // erase character
	EL   Command = 248 // erase line
	GA   Command = 249 // go ahead
	SB   Command = 250 // subnegotiation begins
	WILL Command = 251
	WONT Command = 252
	DO   Command = 253
	DONT Command = 254
	IAC  Command = 255 // interpret as command
)

var commandNames = [...]string{
	"SE", "NOP", "DM", "BRK", "IP", "AO", "AYT", "EC", "EL", "GA",
	"SB", "WILL", "WONT", "DO", "DONT", "IAC",
}

func (c Command) String() string {
	if c >= SE {
		return commandNames[c-SE]
	}
	return "CMD(" + strconv.Itoa(int(c)) + ")"
}

// IsNegotiation reports whether c is WILL, WONT, DO or DONT.
func (c Command) IsNegotiation() bool { return c >= WILL && c <= DONT }

// Option is a telnet option code.
type Option byte

// Options this project deals with.
const (
	Binary         Option = 0   // RFC 856
	Echo           Option = 1   // RFC 857
	SuppressGA     Option = 3   // RFC 858
	Status         Option = 5   // RFC 859
	TerminalType   Option = 24  // RFC 1091
	NAWS           Option = 31  // RFC 1073
	TerminalSpeed  Option = 32  // RFC 1079
	Linemode       Option = 34  // RFC 1184
	Environ        Option = 39  // RFC 1572 (NEW-ENVIRON)
	Authentication Option = 37  // RFC 2941; ESXi offers it first
	ComPort        Option = 44  // RFC 2217 COM-PORT-OPTION
	VMwareExt      Option = 232 // VMWARE-TELNET-EXT (vSphere proxy guide)
)

func (o Option) String() string {
	switch o {
	case Binary:
		return "BINARY"
	case Echo:
		return "ECHO"
	case SuppressGA:
		return "SGA"
	case Status:
		return "STATUS"
	case TerminalType:
		return "TERMINAL-TYPE"
	case NAWS:
		return "NAWS"
	case TerminalSpeed:
		return "TERMINAL-SPEED"
	case Linemode:
		return "LINEMODE"
	case Environ:
		return "NEW-ENVIRON"
	case Authentication:
		return "AUTHENTICATION"
	case ComPort:
		return "COM-PORT-OPTION"
	case VMwareExt:
		return "VMWARE-TELNET-EXT"
	}
	return "OPT(" + strconv.Itoa(int(o)) + ")"
}
