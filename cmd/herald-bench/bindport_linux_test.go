package main

import (
	"context"
	"net"
	"net/url"
	"syscall"
	"testing"
	"time"
)

// Subscriber sockets bound to a source address take their port at connect
// time (IP_BIND_ADDRESS_NO_PORT), so TIME_WAIT sockets of an earlier run do
// not slow the next run's dials.
func TestDialSourceIPBindsNoPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	u, _ := url.Parse("http://" + ln.Addr().String())
	d := &dialer{timeout: 5 * time.Second, sourceIPs: 4}
	for idx, want := range map[int]string{1: "127.0.0.2", 3: "127.0.0.4"} {
		c, err := d.dial(context.Background(), u, idx)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != want {
			t.Errorf("subscriber %d dialled from %s, want %s", idx, got, want)
		}
		sc, _ := c.(*net.TCPConn).SyscallConn()
		var v int
		var gerr error
		_ = sc.Control(func(fd uintptr) { v, gerr = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort) })
		if gerr != nil || v != 1 {
			t.Errorf("subscriber %d: IP_BIND_ADDRESS_NO_PORT = %d (%v), want 1", idx, v, gerr)
		}
		c.Close()
	}
}
