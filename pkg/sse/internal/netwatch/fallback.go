//go:build !linux

package netwatch

import "time"

func newWatcher() watcher { return readWatcher{} }

// watched exists only on Linux; FD's methods are never reached elsewhere
// (WatchFD reports false).
type watched struct{}

func (*watched) waitWritable(time.Time) error { panic("netwatch: no descriptor watches here") }
func (*watched) stopFD()                      { panic("netwatch: no descriptor watches here") }
