package sse

import (
	"context"
	"errors"
	"testing"
	"time"
)

// streamCtx must behave as a context: Done closes on cancel whether it was
// made before or after, context.AfterFunc and context.WithCancel children
// follow it, stopped callbacks never run, and cancel is idempotent.
func TestStreamCtx(t *testing.T) {
	var x streamCtx
	if x.Err() != nil {
		t.Fatal("a new stream context is done")
	}
	early := x.Done()
	ran := make(chan string, 4)
	context.AfterFunc(&x, func() { ran <- "context.AfterFunc" })
	stop := x.AfterFunc(func() { ran <- "stopped" })
	x.AfterFunc(func() { ran <- "method" })
	child, cancelChild := context.WithCancel(&x)
	defer cancelChild()
	if !stop() || stop() {
		t.Fatal("stop: want true once, then false")
	}
	if !x.cancel() || x.cancel() {
		t.Fatal("cancel: want true once, then false")
	}
	if !errors.Is(x.Err(), context.Canceled) {
		t.Fatalf("Err after cancel = %v", x.Err())
	}
	for _, ch := range []<-chan struct{}{early, x.Done(), child.Done()} {
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatal("a Done channel did not close")
		}
	}
	got := map[string]bool{}
	for range 2 {
		select {
		case s := <-ran:
			got[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("callbacks ran: %v", got)
		}
	}
	if !got["context.AfterFunc"] || !got["method"] {
		t.Fatalf("callbacks ran: %v", got)
	}
	select {
	case s := <-ran:
		t.Fatalf("%q ran too", s)
	case <-time.After(50 * time.Millisecond):
	}
	// Registered after the end: runs at once, and cannot be stopped.
	late := make(chan struct{})
	if x.AfterFunc(func() { close(late) })() {
		t.Fatal("stop of a callback registered after the end reported true")
	}
	select {
	case <-late:
	case <-time.After(5 * time.Second):
		t.Fatal("a callback registered after the end did not run")
	}
}
