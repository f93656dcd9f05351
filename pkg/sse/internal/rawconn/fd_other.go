//go:build !linux

package rawconn

import (
	"net"
	"time"

	"github.com/herald-sse/herald/pkg/sse/internal/netwatch"
)

// Bare descriptors are Linux-only: elsewhere every Conn keeps its net.Conn.

func takeFD(net.Conn, func()) (int, netwatch.FD, bool) { return -1, netwatch.FD{}, false }

func closeFD(int) error { return nil }

func peerAddr(int) string { return "" }

func (c *Conn) writeFD([][]byte, time.Duration) error { panic("rawconn: no descriptor mode here") }

func (c *Conn) tryWriteFD([][]byte, Iovecs) (int, Iovecs, error) {
	panic("rawconn: no descriptor mode here")
}
