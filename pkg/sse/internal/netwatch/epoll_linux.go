//go:build linux

package netwatch

import (
	"log/slog"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
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
	c     net.Conn // nil for a bare descriptor (WatchFD)
	w     *epollWatcher
	raw   syscall.RawConn
	fd    int
	token uint64

	// A bare descriptor's writer waiting for room (WaitWritable).
	wmu      sync.Mutex
	ended    bool          // the peer is gone, or the watch stopped: no more waits, no re-arming
	writable chan struct{} // made by the first wait; capacity 1
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
	if !w.register(e) {
		return readWatcher{}.watch(c, gone)
	}

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
			slog.Warn("netwatch: epoll_wait failed; from now on connections are watched by a reading goroutine each, and the streams on bare descriptors end (their clients resume)", "err", err, "connections", len(pending))
			for _, e := range pending {
				if e.c == nil {
					// A bare descriptor has nobody to read it: its stream
					// ends (the client reconnects and resumes).
					e.wake(false)
					e.cb.fire()
					continue
				}
				readUntilGone(e.c, &e.cb)
			}
			return
		}
		for i := 0; i < n; i++ {
			token := getToken(&events[i])
			// A connection's watch is over with its one event; a bare
			// descriptor's only with the peer gone (EPOLLOUT alone wakes
			// its writer).
			hup := events[i].Events&(syscall.EPOLLRDHUP|syscall.EPOLLHUP|syscall.EPOLLERR) != 0
			w.mu.Lock()
			e := w.gone[token]
			if e != nil && (hup || e.c != nil) {
				delete(w.gone, token)
			}
			w.mu.Unlock()
			if e == nil {
				continue
			}
			if e.c == nil {
				e.wake(!hup)
				if !hup {
					continue
				}
			}
			e.cb.fire()
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

// watchFD registers a bare descriptor (see Watcher.WatchFD); nil when
// epoll cannot take it.
func (w *epollWatcher) watchFD(fd int, gone func()) *watched {
	e := &watched{cb: callback{gone: gone}, w: w, fd: fd}
	if !w.register(e) {
		return nil
	}
	if err := e.arm(true, false); err != nil {
		w.mu.Lock()
		delete(w.gone, e.token)
		w.mu.Unlock()
		return nil
	}
	return e
}

// arm registers a bare descriptor (add) or registers it again for its peer
// going away and, with out, for room to write. Registrations are one-shot.
// Call with e.wmu held, or before e is shared.
func (e *watched) arm(add, out bool) error {
	ev := syscall.EpollEvent{Events: syscall.EPOLLRDHUP | epollOneShot}
	if out {
		ev.Events |= syscall.EPOLLOUT
	}
	putToken(&ev, e.token)
	op := syscall.EPOLL_CTL_MOD
	if add {
		op = syscall.EPOLL_CTL_ADD
	}
	return syscall.EpollCtl(e.w.epfd, op, e.fd, &ev)
}

// wake runs on the loop for a bare descriptor's event: it wakes a waiting
// writer and, unless the watch is over (rearm false), registers the
// descriptor again for its peer going away.
func (e *watched) wake(rearm bool) {
	e.wmu.Lock()
	defer e.wmu.Unlock()
	if !rearm {
		e.ended = true
	}
	if e.writable != nil {
		select {
		case e.writable <- struct{}{}:
		default:
		}
	}
	if rearm && !e.ended {
		// e.ended is set by stop before the descriptor is removed and
		// closed, so this never touches a reused descriptor number.
		_ = e.arm(false, false)
	}
}

// waitWritable waits until the descriptor has room to write, its peer is
// gone, or deadline passes (os.ErrDeadlineExceeded; a zero deadline waits
// for the first two only).
func (e *watched) waitWritable(deadline time.Time) error {
	e.wmu.Lock()
	if e.ended {
		e.wmu.Unlock()
		return nil // the write that follows fails, or goes through
	}
	if e.writable == nil {
		e.writable = make(chan struct{}, 1)
	}
	select {
	case <-e.writable: // stale
	default:
	}
	err := e.arm(false, true)
	e.wmu.Unlock()
	if err != nil {
		return err
	}
	if deadline.IsZero() {
		<-e.writable
		return nil
	}
	d := time.Until(deadline)
	if d <= 0 {
		return os.ErrDeadlineExceeded
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-e.writable:
		return nil
	case <-t.C:
		return os.ErrDeadlineExceeded
	}
}

// stopFD ends a bare descriptor's watch. The caller closes the descriptor
// after it.
func (e *watched) stopFD() {
	e.cb.stop()
	e.wmu.Lock()
	e.ended = true
	e.wmu.Unlock()
	w := e.w
	w.mu.Lock()
	delete(w.gone, e.token)
	w.mu.Unlock()
	_ = syscall.EpollCtl(w.epfd, syscall.EPOLL_CTL_DEL, e.fd, nil)
}

// register gives e its token and serves it, starting the loop if needed;
// false when epoll has failed for good.
func (w *epollWatcher) register(e *watched) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken != nil {
		return false
	}
	w.next++
	e.token = w.next
	w.gone[e.token] = e
	if !w.running {
		w.running = true
		go w.loop()
	}
	return true
}
