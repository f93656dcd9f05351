package netwatch

import (
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pair returns both ends of a loopback TCP connection.
func pair(t *testing.T) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	return server, client
}

func watchers() map[string]*Watcher {
	return map[string]*Watcher{"default": {}, "fallback": {impl: readWatcher{}}}
}

func TestPeerCloseIsReported(t *testing.T) {
	for name, w := range watchers() {
		t.Run(name, func(t *testing.T) {
			const n = 50
			gone := make(chan int, n)
			var servers []net.Conn
			var stops []func()
			var clients []net.Conn
			for i := 0; i < n; i++ {
				s, c := pair(t)
				servers, clients = append(servers, s), append(clients, c)
				stops = append(stops, w.Watch(s, func() { gone <- i }))
			}
			// Close every other client: exactly those are reported.
			for i := 0; i < n; i += 2 {
				clients[i].Close()
			}
			seen := map[int]bool{}
			for len(seen) < n/2 {
				select {
				case i := <-gone:
					if i%2 != 0 || seen[i] {
						t.Fatalf("reported %d (already: %v)", i, seen[i])
					}
					seen[i] = true
				case <-time.After(10 * time.Second):
					t.Fatalf("only %d of %d closes reported", len(seen), n/2)
				}
			}
			select {
			case i := <-gone:
				t.Fatalf("open connection %d reported gone", i)
			case <-time.After(100 * time.Millisecond):
			}
			for i := range servers {
				stops[i]()
				servers[i].Close()
				clients[i].Close()
			}
		})
	}
}

func TestStopPreventsReport(t *testing.T) {
	for name, w := range watchers() {
		t.Run(name, func(t *testing.T) {
			s, c := pair(t)
			called := make(chan struct{}, 1)
			stop := w.Watch(s, func() { called <- struct{}{} })
			stop()
			c.Close()
			s.Close()
			select {
			case <-called:
				t.Fatal("gone called after stop")
			case <-time.After(300 * time.Millisecond):
			}
		})
	}
}

func TestDataFromPeerIsNotAClose(t *testing.T) {
	for name, w := range watchers() {
		t.Run(name, func(t *testing.T) {
			s, c := pair(t)
			defer c.Close()
			defer s.Close()
			called := make(chan struct{}, 1)
			stop := w.Watch(s, func() { called <- struct{}{} })
			defer stop()
			if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
				t.Fatal(err)
			}
			select {
			case <-called:
				t.Fatal("bytes from the peer reported as a close")
			case <-time.After(300 * time.Millisecond):
			}
			c.Close()
			select {
			case <-called:
			case <-time.After(10 * time.Second):
				t.Fatal("close after data not reported")
			}
		})
	}
}
