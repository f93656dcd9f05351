package main

import "syscall"

// ipBindAddressNoPort is IP_BIND_ADDRESS_NO_PORT (linux/in.h; not in package
// syscall).
const ipBindAddressNoPort = 24

// bindNoPort makes a socket bound to a source address (-source-ips) take
// its port at connect(2), for the whole 4-tuple, instead of at bind(2):
// bind must find a port no socket of that address holds, whatever the
// peer, and after a run tens of thousands sit in TIME_WAIT — the next run's
// dials then spend milliseconds each in the kernel looking for one (a
// 19,000-stream connect took 12-25 s instead of 2-3 s).
func bindNoPort(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) {
		serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, ipBindAddressNoPort, 1)
	})
	if err != nil {
		return err
	}
	return serr
}
