//go:build linux

package rawconn

import (
	"net"
	"syscall"
	"unsafe"
)

// maxIovecs is IOV_MAX on Linux: a longer batch is written in part and the
// rest left to the stream's goroutine.
const maxIovecs = 1024

// Iovecs is a batch's reusable iovec array, scratch space for TryWrite.
type Iovecs = []syscall.Iovec

// rawWriter makes non-blocking writev(2) calls on a connection, for the
// flushers writing to idle streams. Its callback is bound once, so a call
// allocates nothing.
type rawWriter struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool

	// State of the call in progress (the caller holds the stream's lock).
	iov       []syscall.Iovec
	n         int
	attempted bool
	err       error
}

// newRawWriter returns a writer for conn, or nil when conn has no file
// descriptor of its own (TLS, a wrapper).
func newRawWriter(conn net.Conn) *rawWriter {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	w := &rawWriter{raw: raw}
	w.fn = w.call
	return w
}

func (w *rawWriter) call(fd uintptr) bool {
	w.attempted = true
	r, _, e := syscall.Syscall(syscall.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&w.iov[0])), uintptr(len(w.iov)))
	switch e {
	case 0:
		w.n = int(r)
	case syscall.EAGAIN, syscall.EINTR:
	default:
		w.err = e
	}
	return true // never wait: the stream's goroutine does that
}

// tryWritev makes one writev(2) of bufs without waiting for the socket. It
// returns the bytes written; attempted is false when the system call did not
// run (the connection is closing or its write deadline has passed); err is
// a failure of the call other than "would block". iov is scratch space,
// returned for reuse.
func (w *rawWriter) tryWritev(bufs [][]byte, iov Iovecs) (n int, attempted bool, _ Iovecs, err error) {
	iov = appendIovecs(iov[:0], bufs)
	if len(iov) == 0 {
		return 0, true, iov, nil
	}
	w.iov, w.n, w.attempted, w.err = iov, 0, false, nil
	_ = w.raw.Write(w.fn)
	n, attempted, err = w.n, w.attempted, w.err
	w.iov, w.err = nil, nil
	clear(iov) // keep no frame alive from the pool
	return n, attempted, iov[:0], err
}
