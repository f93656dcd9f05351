//go:build linux

package rawconn

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"github.com/herald-sse/herald/pkg/sse/internal/netwatch"
)

// takeFD takes a TCP or Unix connection over as a bare descriptor: it
// duplicates c's descriptor (close-on-exec, and non-blocking like the
// original: the flag belongs to the shared open file), registers the copy
// with netwatch, and closes c, whose Go state (the net.Conn, its addresses,
// the poller's descriptor) is then freed. ok is false, and c untouched,
// when that cannot be done; the caller keeps c.
func takeFD(c net.Conn, gone func()) (fd int, w netwatch.FD, ok bool) {
	switch c.(type) {
	case *net.TCPConn, *net.UnixConn:
	default:
		return -1, netwatch.FD{}, false
	}
	sc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return -1, netwatch.FD{}, false
	}
	fd = -1
	var dupErr error
	if err := sc.Control(func(f uintptr) {
		r, _, e := syscall.Syscall(syscall.SYS_FCNTL, f, syscall.F_DUPFD_CLOEXEC, 0)
		if e != 0 {
			dupErr = e
			return
		}
		fd = int(r)
	}); err != nil || dupErr != nil {
		return -1, netwatch.FD{}, false
	}
	w, ok = netwatch.Default.WatchFD(fd, gone)
	if !ok {
		_ = syscall.Close(fd)
		return -1, netwatch.FD{}, false
	}
	_ = c.Close()
	return fd, w, true
}

func closeFD(fd int) error { return os.NewSyscallError("close", syscall.Close(fd)) }

// iovPool holds scratch iovec arrays for writeFD, so that a blocking write
// allocates nothing and an idle connection keeps none.
var iovPool = sync.Pool{New: func() any { return new(Iovecs) }}

// writeFD writes bufs whole, waiting for room (netwatch) up to timeout
// from the first write that would block; a timeout <= 0 waits as long as
// the peer is there.
func (c *Conn) writeFD(bufs [][]byte, timeout time.Duration) error {
	p := iovPool.Get().(*Iovecs)
	defer iovPool.Put(p)
	var deadline time.Time
	for {
		for len(bufs) > 0 && len(bufs[0]) == 0 {
			bufs = bufs[1:]
		}
		if len(bufs) == 0 {
			return nil
		}
		n, iov, err := c.tryWriteFD(bufs, *p)
		*p = iov
		if err != nil {
			return err
		}
		if n > 0 {
			bufs = consume(bufs, n)
			continue
		}
		if deadline.IsZero() && timeout > 0 {
			deadline = time.Now().Add(timeout)
		}
		if err := c.watch.WaitWritable(deadline); err != nil {
			return err
		}
	}
}

// consume drops the first n bytes of bufs.
func consume(bufs [][]byte, n int) [][]byte {
	for n > 0 && len(bufs) > 0 {
		if n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
			continue
		}
		bufs[0] = bufs[0][n:]
		n = 0
	}
	return bufs
}

// tryWriteFD makes one non-blocking writev(2) of bufs (at most maxIovecs of
// them) and returns the bytes written: 0 when the socket has no room.
func (c *Conn) tryWriteFD(bufs [][]byte, iov Iovecs) (int, Iovecs, error) {
	iov = appendIovecs(iov[:0], bufs)
	if len(iov) == 0 {
		return 0, iov, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	defer clear(iov) // keep no frame alive from the pool
	if c.closed {
		return 0, iov[:0], net.ErrClosed
	}
	for {
		r, _, e := syscall.Syscall(syscall.SYS_WRITEV, uintptr(c.fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)))
		switch e {
		case 0:
			return int(r), iov[:0], nil
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return 0, iov[:0], nil
		default:
			return 0, iov[:0], os.NewSyscallError("writev", e)
		}
	}
}

// appendIovecs appends an iovec per non-empty buffer, up to maxIovecs.
func appendIovecs(iov Iovecs, bufs [][]byte) Iovecs {
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		if len(iov) == maxIovecs {
			break
		}
		v := syscall.Iovec{Base: &b[0]}
		v.SetLen(len(b))
		iov = append(iov, v)
	}
	return iov
}

// peerAddr is the address of fd's peer, as net.Conn.RemoteAddr would show
// it; "" when unknown.
func peerAddr(fd int) string {
	sa, err := syscall.Getpeername(fd)
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *syscall.SockaddrInet6:
		ip := netip.AddrFrom16(a.Addr)
		if a.ZoneId != 0 {
			if ifi, err := net.InterfaceByIndex(int(a.ZoneId)); err == nil {
				ip = ip.WithZone(ifi.Name)
			}
		}
		return netip.AddrPortFrom(ip, uint16(a.Port)).String()
	case *syscall.SockaddrUnix:
		if a.Name == "" {
			return "@"
		}
		return a.Name
	}
	return ""
}
