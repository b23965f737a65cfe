package rfc2217_test

import (
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
)

func ExampleAppendMessage() {
	b := rfc2217.AppendMessage(nil, rfc2217.Message{Command: rfc2217.SetBaudrate, Baud: 65535})
	fmt.Printf("% x\n", b)
	// Output: ff fa 2c 01 00 00 ff ff ff ff ff f0
}

func ExampleParse() {
	// Payload of a reply from sredird 2.2.1, as the telnet decoder hands it
	// over (after IAC SB 44, unescaped).
	m, err := rfc2217.Parse([]byte{0x65, 0x00, 0x00, 0x96, 0x00, 0, 0, 0, 0})
	if err != nil {
		panic(err)
	}
	fmt.Println(m, m.Baud)
	// Output: SERVER-SET-BAUDRATE 38400 (+4 extra bytes) 38400
}
