package rfc2217_test

import (
	"context"
	"fmt"

	"github.com/vspc-bridge/vspc-bridge/rfc2217"
	"github.com/vspc-bridge/vspc-bridge/rfc2217/rfc2217test"
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

func ExampleAccessServer_Handle() {
	port := rfc2217test.NewMemPort(rfc2217.Settings{Baud: 9600, DataSize: 8, Parity: rfc2217.ParityNone, StopSize: rfc2217.Stop1})
	s := rfc2217.NewAccessServer("vspc-bridge")
	ctx := context.Background()
	// The payloads as a telnet decoder hands them over (after IAC SB 44).
	for _, payload := range [][]byte{
		{0x01, 0x00, 0x01, 0xc2, 0x00}, // SET-BAUDRATE 115200
		{0x03, 0x00},                   // SET-PARITY query
		{0x05, 0x08},                   // SET-CONTROL DTR ON
	} {
		reply, err := s.Handle(ctx, payload, port)
		fmt.Printf("% x %v\n", reply, err)
	}
	fmt.Printf("% x\n", s.Notify(nil, 0, rfc2217.ModemCD|rfc2217.ModemDSR|rfc2217.ModemCTS))
	// Output:
	// ff fa 2c 65 00 01 c2 00 ff f0 <nil>
	// ff fa 2c 67 01 ff f0 <nil>
	// ff fa 2c 69 08 ff f0 <nil>
	// ff fa 2c 6b b0 ff f0
}

func ExampleParseSettings() {
	s, err := rfc2217.ParseSettings("57600 7E1.5")
	fmt.Println(s.Baud, s.DataSize, s.Parity, s.StopSize, s.Flow, err)
	fmt.Println(s)
	// Output:
	// 57600 7 even 1.5 none <nil>
	// 57600 7E1.5
}
