//go:build linux

package netwatch

import (
	"log/slog"
	"net"
	"sync"
	"syscall"
)

// epollWatcher serves every watched connection from one goroutine blocked
// in epoll_wait. Registrations are one-shot on EPOLLRDHUP (plus the always
// reported EPOLLHUP and EPOLLERR), keyed by a token rather than the file
// descriptor, so a descriptor reused after close cannot trigger a stale
// callback.
type epollWatcher struct {
	epfd int
	wait func(epfd int, events []syscall.EpollEvent, msec int) (int, error) // syscall.EpollWait; tests make it fail

	mu      sync.Mutex // guards the fields below
	next    uint64
	gone    map[uint64]*watched
	running bool  // a loop goroutine is serving epfd
	broken  error // epoll_wait failed for good: every watch reads instead
}

// watched is one registered connection: everything a watch holds, in one
// allocation.
type watched struct {
	cb    callback
	c     net.Conn
	w     *epollWatcher
	raw   syscall.RawConn
	fd    int
	token uint64
}

func newWatcher() watcher {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return readWatcher{}
	}
	return &epollWatcher{epfd: fd, wait: syscall.EpollWait, gone: make(map[uint64]*watched)}
}

func (w *epollWatcher) watch(c net.Conn, gone func()) func() {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return readWatcher{}.watch(c, gone)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return readWatcher{}.watch(c, gone)
	}
	e := &watched{cb: callback{gone: gone}, c: c, w: w, raw: raw}
	w.mu.Lock()
	if w.broken != nil {
		w.mu.Unlock()
		return readWatcher{}.watch(c, gone)
	}
	w.next++
	e.token = w.next
	w.gone[e.token] = e
	if !w.running {
		w.running = true
		go w.loop()
	}
	w.mu.Unlock()

	var ctlErr error
	err = raw.Control(func(f uintptr) {
		e.fd = int(f)
		ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | epollOneShot}
		putToken(&ev, e.token)
		ctlErr = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_ADD, e.fd, &ev)
	})
	if err != nil || ctlErr != nil {
		w.mu.Lock()
		delete(w.gone, e.token)
		w.mu.Unlock()
		return readWatcher{}.watch(c, gone)
	}
	return e.stop
}

// stop ends the watch of e.
func (e *watched) stop() {
	e.cb.stop()
	w := e.w
	w.mu.Lock()
	delete(w.gone, e.token)
	w.mu.Unlock()
	// The descriptor is still open (the caller closes c after stop), so
	// fd still names this connection.
	_ = e.raw.Control(func(uintptr) {
		_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, e.fd, nil)
	})
}

// EPOLLONESHOT as the uint32 EpollEvent.Events wants it.
const epollOneShot = 1 << 30

// loop serves epfd while anything is watched; it exits within idleWait
// of the last stop, so an idle process runs no watcher goroutine.
func (w *epollWatcher) loop() {
	events := make([]syscall.EpollEvent, 128)
	for {
		n, err := w.wait(w.epfd, events, idleWait)
		if err != nil && err != syscall.EINTR {
			// Not a transient error (EBADF, EFAULT, EINVAL): epoll cannot
			// serve anyone any more. Hand every watched connection to a
			// reading goroutine, and every later one too, rather than
			// stop noticing departed peers without a word.
			w.mu.Lock()
			w.running = false
			w.broken = err
			pending := w.gone
			w.gone = map[uint64]*watched{}
			w.mu.Unlock()
			slog.Warn("netwatch: epoll_wait failed; watching connections with a reading goroutine each from now on", "err", err, "connections", len(pending))
			for _, e := range pending {
				readUntilGone(e.c, &e.cb)
			}
			return
		}
		for i := 0; i < n; i++ {
			token := getToken(&events[i])
			w.mu.Lock()
			e := w.gone[token]
			delete(w.gone, token)
			w.mu.Unlock()
			if e != nil {
				e.cb.fire()
			}
		}
		w.mu.Lock()
		if len(w.gone) == 0 {
			w.running = false
			w.mu.Unlock()
			return
		}
		w.mu.Unlock()
	}
}

// idleWait is how long epoll_wait blocks, in milliseconds.
const idleWait = 200

// The 64-bit user data of an epoll_event is split by package syscall into
// Fd and Pad.
func putToken(ev *syscall.EpollEvent, t uint64) {
	ev.Fd = int32(uint32(t))
	ev.Pad = int32(uint32(t >> 32))
}

func getToken(ev *syscall.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}
