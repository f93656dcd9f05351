//go:build !linux

package rawconn

import "net"

// Non-blocking writes are Linux-only; elsewhere every stream writes from
// its own goroutine (Conn.CanTryWrite is false).

// Iovecs is a batch's reusable scratch space for TryWrite.
type Iovecs = []struct{}

type rawWriter struct{}

func newRawWriter(net.Conn) *rawWriter { return nil }

func (*rawWriter) tryWritev(_ [][]byte, iov Iovecs) (int, bool, Iovecs, error) {
	return 0, false, iov, nil
}
