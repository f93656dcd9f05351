// Package netwatch tells when the peer of an idle connection goes away,
// without a goroutine per connection.
//
// A server that only writes to a connection (an event stream) does not
// notice a client that closed it until its next write. Reading in a
// goroutine per connection notices at once but costs a goroutine stack per
// connection. On Linux, Watcher registers connections in one epoll
// instance (EPOLLRDHUP, one-shot) served by a single goroutine; elsewhere it
// falls back to a reading goroutine per connection.
package netwatch

import (
	"net"
	"sync"
	"time"
)

// Watcher reports peers that closed or reset their connection. It is safe
// for concurrent use.
type Watcher struct {
	once sync.Once
	impl watcher
}

type watcher interface {
	watch(c net.Conn, gone func()) (stop func())
}

// FD is the watch of a bare descriptor (WatchFD). The zero FD is no watch.
type FD struct{ e *watched }

// WatchFD watches a bare, non-blocking socket descriptor as Watch does a
// connection, and also serves its writer's waits for room (WaitWritable),
// so a connection taken over as a descriptor needs neither a goroutine nor
// Go's poller. ok is false where that is not possible (not Linux, or epoll
// failed); the caller then keeps its net.Conn. Should epoll fail later,
// every descriptor's gone is called (nothing else can watch it).
func (w *Watcher) WatchFD(fd int, gone func()) (FD, bool) {
	w.once.Do(func() { w.impl = newWatcher() })
	fw, ok := w.impl.(interface {
		watchFD(fd int, gone func()) *watched
	})
	if !ok {
		return FD{}, false
	}
	e := fw.watchFD(fd, gone)
	return FD{e}, e != nil
}

// WaitWritable waits until the descriptor has room to write, its peer is
// gone (the next write then fails, or goes through), or deadline passes:
// os.ErrDeadlineExceeded. A zero deadline never passes. Only one goroutine
// may wait at a time.
func (f FD) WaitWritable(deadline time.Time) error { return f.e.waitWritable(deadline) }

// Stop ends the watch, as Watch's stop does; close the descriptor after.
func (f FD) Stop() { f.e.stopFD() }

// Default is the process-wide watcher.
var Default = &Watcher{}

// Watch calls gone (once, from another goroutine) when the peer of c closes
// or resets the connection, or when c fails. Call stop before closing c;
// once stop has returned, gone is not running and will not be called (stop
// waits for a call in progress, so gone must not call stop). The
// connection must not be read by anyone else (bytes the peer sends are
// discarded by the fallback).
func (w *Watcher) Watch(c net.Conn, gone func()) (stop func()) {
	w.once.Do(func() { w.impl = newWatcher() })
	return w.impl.watch(c, gone)
}

// callback runs gone at most once, and never after stop returned.
type callback struct {
	mu   sync.Mutex // held while gone runs
	done bool
	gone func()
}

func (cb *callback) fire() {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	if !cb.done {
		cb.done = true
		cb.gone()
	}
}

func (cb *callback) stop() {
	cb.mu.Lock()
	cb.done = true
	cb.mu.Unlock()
}

// readWatcher is the portable fallback: one reading goroutine per
// connection.
type readWatcher struct{}

func (readWatcher) watch(c net.Conn, gone func()) func() {
	cb := &callback{gone: gone}
	readUntilGone(c, cb)
	// The reader ends when the caller closes c; stop does not wait for it
	// (the caller closes c right after stop).
	return cb.stop
}

// readUntilGone reads c in a goroutine of its own and fires cb when the
// read fails.
func readUntilGone(c net.Conn, cb *callback) {
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := c.Read(buf); err != nil {
				cb.fire()
				return
			}
		}
	}()
}
