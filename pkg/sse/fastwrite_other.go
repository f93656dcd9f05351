//go:build !linux

package sse

import "net"

// The publisher-side write path is Linux-only; elsewhere every stream
// writes from its own goroutine.

type iovScratch = []struct{}

type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) tryWritev(_ [][]byte, iov iovScratch) (int, bool, iovScratch, error) {
	return 0, false, iov, nil
}
