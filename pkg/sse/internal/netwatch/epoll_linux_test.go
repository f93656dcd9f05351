//go:build linux

package netwatch

import (
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// An epoll_wait that fails for good does not end watching silently: the
// connections already watched, and later ones, are still reported.
func TestEpollFailureFallsBack(t *testing.T) {
	failed := make(chan struct{})
	var once atomic.Bool
	ew, ok := newWatcher().(*epollWatcher)
	if !ok {
		t.Fatal("newWatcher did not return the epoll watcher")
	}
	ew.wait = func(epfd int, events []syscall.EpollEvent, msec int) (int, error) {
		if once.CompareAndSwap(false, true) {
			close(failed)
			return 0, syscall.EBADF
		}
		return syscall.EpollWait(epfd, events, msec)
	}
	w := &Watcher{impl: ew}
	w.once.Do(func() {})
	s1, c1 := pair(t)
	defer s1.Close()
	gone1 := make(chan struct{})
	stop1 := w.Watch(s1, func() { close(gone1) })
	defer stop1()
	<-failed
	s2, c2 := pair(t)
	defer s2.Close()
	gone2 := make(chan struct{})
	stop2 := w.Watch(s2, func() { close(gone2) })
	defer stop2()
	c1.Close()
	c2.Close()
	for i, g := range []chan struct{}{gone1, gone2} {
		select {
		case <-g:
		case <-time.After(10 * time.Second):
			t.Fatalf("connection %d: peer close not reported after epoll_wait failed", i+1)
		}
	}
}

// A bare descriptor cannot be handed to a reading goroutine: when
// epoll_wait fails for good, its gone is called (its stream ends and the
// client resumes elsewhere), a waiting writer is woken, and WatchFD then
// refuses new descriptors, so that their connections stay net.Conns.
func TestEpollFailureEndsDescriptors(t *testing.T) {
	release := make(chan struct{})
	ew, ok := newWatcher().(*epollWatcher)
	if !ok {
		t.Fatal("newWatcher did not return the epoll watcher")
	}
	var once atomic.Bool
	ew.wait = func(epfd int, events []syscall.EpollEvent, msec int) (int, error) {
		if once.CompareAndSwap(false, true) {
			<-release
			return 0, syscall.EBADF
		}
		return syscall.EpollWait(epfd, events, msec)
	}
	w := &Watcher{impl: ew}
	w.once.Do(func() {})
	s, _ := pair(t)
	defer s.Close()
	fd := descriptor(t, s.(*net.TCPConn))
	gone := make(chan struct{})
	f, ok := w.WatchFD(fd, func() { close(gone) })
	if !ok {
		t.Fatal("WatchFD refused a socket")
	}
	defer f.Stop()
	woke := make(chan error, 1)
	go func() {
		// Not writable only while the buffer is full; wait anyway: the
		// failure must wake it whatever the socket's state.
		woke <- f.e.waitOnly()
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	select {
	case <-gone:
	case <-time.After(10 * time.Second):
		t.Fatal("gone not called after epoll_wait failed")
	}
	select {
	case <-woke:
	case <-time.After(10 * time.Second):
		t.Fatal("a waiting writer was not woken after epoll_wait failed")
	}
	if _, ok := w.WatchFD(fd, func() {}); ok {
		t.Fatal("WatchFD accepted a descriptor after epoll_wait failed for good")
	}
}

// descriptor returns the socket descriptor of a TCP connection.
func descriptor(t *testing.T, c interface {
	SyscallConn() (syscall.RawConn, error)
}) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	_ = rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

// waitOnly waits for a wake-up without arming EPOLLOUT (tests: a wake-up
// that does not come from the socket).
func (e *watched) waitOnly() error {
	e.wmu.Lock()
	if e.ended {
		e.wmu.Unlock()
		return nil
	}
	if e.writable == nil {
		e.writable = make(chan struct{}, 1)
	}
	ch := e.writable
	e.wmu.Unlock()
	<-ch
	return nil
}
