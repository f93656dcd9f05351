//go:build !race

package server

const (
	raceEnabled  = false
	slowReaders  = 1000
	stormClients = 5000
)
