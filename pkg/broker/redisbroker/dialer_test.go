package redisbroker

import (
	"context"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/sys/unix"
)

// sockopt reads an integer socket option of a TCP connection.
func sockopt(t *testing.T, c net.Conn, level, opt int) int {
	t.Helper()
	raw, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := raw.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatalf("getsockopt(%d, %d): %v", level, opt, serr)
	}
	return v
}

// TestDialerSocketOptions: every TCP connection the broker dials has
// keepalive and TCP_USER_TIMEOUT, so a peer that vanished without a RST
// fails blocked reads and writes in seconds.
func TestDialerSocketOptions(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	opt, err := clientOptions("redis://" + ln.Addr().String() + "/0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := opt.Dialer(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); got != int(tcpUserTimeout.Milliseconds()) {
		t.Errorf("TCP_USER_TIMEOUT = %d ms, want %d", got, tcpUserTimeout.Milliseconds())
	}
	if got := sockopt(t, c, unix.SOL_SOCKET, unix.SO_KEEPALIVE); got != 1 {
		t.Errorf("SO_KEEPALIVE = %d, want 1", got)
	}
	if got := sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPIDLE); got != int(keepAliveIdle.Seconds()) {
		t.Errorf("TCP_KEEPIDLE = %d s, want %v", got, keepAliveIdle)
	}
	if got := sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPINTVL); got != int(keepAliveInterval.Seconds()) {
		t.Errorf("TCP_KEEPINTVL = %d s, want %v", got, keepAliveInterval)
	}
	if got := sockopt(t, c, unix.IPPROTO_TCP, unix.TCP_KEEPCNT); got != keepAliveCount {
		t.Errorf("TCP_KEEPCNT = %d, want %d", got, keepAliveCount)
	}
}

// TestClientOptions: the client built from Config.URL never retries,
// honours ctx deadlines, and has short timeouts unless the URL sets them.
func TestClientOptions(t *testing.T) {
	opt, err := clientOptions("redis://localhost:6379/0?max_retries=5")
	if err != nil {
		t.Fatal(err)
	}
	if opt.MaxRetries != -1 || !opt.ContextTimeoutEnabled || opt.Dialer == nil {
		t.Errorf("MaxRetries %d, ContextTimeoutEnabled %v, Dialer set %v", opt.MaxRetries, opt.ContextTimeoutEnabled, opt.Dialer != nil)
	}
	if opt.DialTimeout != defaultDialTimeout || opt.ReadTimeout != defaultReadTimeout || opt.DialerRetries != defaultDialAttempts {
		t.Errorf("defaults: dial %v read %v attempts %d", opt.DialTimeout, opt.ReadTimeout, opt.DialerRetries)
	}
	opt, err = clientOptions("redis://localhost:6379/0?dial_timeout=7s&read_timeout=9s")
	if err != nil {
		t.Fatal(err)
	}
	if opt.DialTimeout != 7*time.Second || opt.ReadTimeout != 9*time.Second {
		t.Errorf("URL settings not kept: dial %v read %v", opt.DialTimeout, opt.ReadTimeout)
	}
	// The client the broker builds uses them (New needs no Redis).
	b, err := New(t.Context(), Config{URL: "redis://127.0.0.1:1/0", Logger: warnLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := b.rdb.(*redis.Client).Options()
	if got.MaxRetries != 0 || !got.ContextTimeoutEnabled || got.ReadTimeout != defaultReadTimeout {
		t.Errorf("broker's client: MaxRetries %d (0 = none after go-redis's normalisation), ContextTimeoutEnabled %v, ReadTimeout %v", got.MaxRetries, got.ContextTimeoutEnabled, got.ReadTimeout)
	}
}
