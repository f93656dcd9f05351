// Package hashslot computes Redis Cluster hash slots, for the Redis broker
// (which routes each topic to the primary owning its slot) and for the
// tests that place topics on shards.
package hashslot

import "strings"

// Slots is the number of Redis Cluster hash slots.
const Slots = 16384

// Of returns the hash slot of key, as CLUSTER KEYSLOT computes it: the
// CRC16 (XMODEM) of its hash tag — the part between the first '{' and the
// next '}', if not empty — or of the whole key, modulo 16384.
func Of(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return int(crc % Slots)
}
