#!/usr/bin/python3
"""pyserial's rfc2217:// client (python3-serial 3.5) against an access server
under test. pyserial is strict: it waits for each acknowledgement and raises
on a missing or different one, so any wrong reply fails this script.

usage: pyserial_client.py URL BAUD BYTESIZE PARITY STOPBITS NEWBAUD LINES NBYTES

  PARITY    N, E, O, M or S
  STOPBITS  1, 1.5 or 2
  NEWBAUD   baud rate set after open (pyserial re-sends all four settings)
  LINES     1: toggle DTR/RTS and expect DSR/CTS to follow (loop-back port),
            then BREAK on/off; 0: only set DTR/RTS (use ?ign_set_control
            in URL when the port cannot do modem lines, e.g. a pty)
  NBYTES    bytes to write; the device end echoes them; many are 0xFF

Prints one line per step; exits non-zero with a traceback on failure.
"""
import random
import sys
import time

import serial


def wait_for(what, cond, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def main():
    url, baud, bytesize, parity, stopbits, newbaud, lines, nbytes = sys.argv[1:9]
    stop = {"1": serial.STOPBITS_ONE, "1.5": serial.STOPBITS_ONE_POINT_FIVE, "2": serial.STOPBITS_TWO}[stopbits]
    s = serial.serial_for_url(url, baudrate=int(baud), bytesize=int(bytesize),
                              parity=parity, stopbits=stop, timeout=5)
    print("open", s.baudrate, s.bytesize, s.parity, s.stopbits, flush=True)
    s.baudrate = int(newbaud)
    print("baudrate", s.baudrate, flush=True)
    if lines == "1":
        s.dtr = False
        s.rts = False
        wait_for("DSR and CTS to drop", lambda: not s.dsr and not s.cts)
        assert s.cd, "CD should stay on"
        print("lines off", s.cts, s.dsr, s.cd, flush=True)
        s.dtr = True
        s.rts = True
        wait_for("DSR and CTS to rise", lambda: s.dsr and s.cts)
        print("lines on", s.cts, s.dsr, s.cd, flush=True)
        s.break_condition = True
        s.break_condition = False
        print("break", flush=True)
    else:
        s.dtr = True
        s.rts = True
        print("lines set", flush=True)
    rnd = random.Random(2217)
    data = bytes(0xFF if rnd.random() < 0.3 else rnd.randrange(256) for _ in range(int(nbytes)))
    s.write(data)
    got = b""
    deadline = time.time() + 30
    while len(got) < len(data) and time.time() < deadline:
        got += s.read(len(data) - len(got))
    assert got == data, "echo differs: %d of %d bytes, first diff at %d" % (
        len(got), len(data), next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), min(len(got), len(data))))
    print("data", len(got), "bytes,", data.count(b"\xff"), "of them 0xFF", flush=True)
    s.reset_input_buffer()
    s.reset_output_buffer()
    print("purged", flush=True)
    s.close()
    print("OK", flush=True)


if __name__ == "__main__":
    main()
