//go:build linux

package netwatch

import (
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
