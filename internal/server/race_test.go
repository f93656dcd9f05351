//go:build race

package server

// Under the race detector (at most 8128 live goroutines, and several times
// slower) the load tests run at a smaller scale.
const (
	raceEnabled  = true
	slowReaders  = 1000
	stormClients = 2500
)
