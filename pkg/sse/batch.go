package sse

import (
	"sync"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse/internal/rawconn"
)

// batch is the scratch space of one delivery: the items taken from the
// subscription, the pieces to write, and the bytes of composite ids and
// small frames. Batches come from a pool shared by all streams, so an idle
// stream holds no scratch memory at all.
type batch struct {
	items []*broker.Event
	bufs  [][]byte
	idbuf []byte
	iov   rawconn.Iovecs
}

var batchPool = sync.Pool{New: func() any { return new(batch) }}

func getBatch() *batch { return batchPool.Get().(*batch) }

func putBatch(b *batch) {
	clear(b.items) // don't pin events
	clear(b.bufs)
	if cap(b.items) > 1<<14 || cap(b.bufs) > 1<<15 || cap(b.idbuf) > 1<<20 {
		return // an outsized burst: let it go
	}
	b.items, b.bufs, b.idbuf = b.items[:0], b.bufs[:0], b.idbuf[:0]
	batchPool.Put(b)
}
