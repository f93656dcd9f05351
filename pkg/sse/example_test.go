package sse_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/broker/membroker"
	"github.com/herald-sse/herald/pkg/sse"
)

// The classic use: a handler mounted at /events that sends a
// "my-custom-event" event "Hello World! N" every few seconds (here every
// 100ms, to keep the example quick).
func ExampleServe() {
	stream := func(ctx context.Context, s *sse.Stream) error {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for n := 1; ; n++ {
			err := s.Send(sse.Event{ID: fmt.Sprint(n), Type: "my-custom-event", Data: fmt.Sprintf("Hello World! %d", n)})
			if err != nil {
				return err
			}
			select {
			case <-ctx.Done():
				return nil
			case <-tick.C:
			}
		}
	}
	mux := http.NewServeMux()
	mux.Handle("/events", sse.Serve(stream, nil)) // nil: sse.DefaultOnConnect
	srv := httptest.NewServer(mux)
	defer srv.Close()

	// Read three events with the Go client.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var c sse.Client
	n := 0
	_ = c.Subscribe(ctx, srv.URL+"/events", func(ev sse.Event) error {
		fmt.Printf("%s %s: %s\n", ev.ID, ev.Type, ev.Data)
		if n++; n == 3 {
			cancel()
		}
		return nil
	})
	// Output:
	// 1 my-custom-event: Hello World! 1
	// 2 my-custom-event: Hello World! 2
	// 3 my-custom-event: Hello World! 3
}

// A custom on-connect hook decides status and headers before the stream
// starts: here it rejects a request without a token. Any status but 200 is
// sent as a plain HTTP response and the stream function never runs.
func ExampleOnConnect() {
	requireToken := func(r *http.Request) (int, http.Header, error) {
		if r.URL.Query().Get("token") != "s3cret" {
			return http.StatusUnauthorized, nil, fmt.Errorf("a valid token is required")
		}
		status, h, err := sse.DefaultOnConnect(r)
		h.Set("X-Stream", "granted")
		return status, h, err
	}
	h := sse.Serve(func(ctx context.Context, s *sse.Stream) error {
		return s.Send(sse.Event{Data: "welcome"})
	}, requireToken)
	srv := httptest.NewServer(h)
	defer srv.Close()

	for _, url := range []string{srv.URL, srv.URL + "?token=s3cret"} {
		resp, err := http.Get(url)
		if err != nil {
			panic(err)
		}
		resp.Body.Close()
		fmt.Printf("%d %s X-Stream=%q\n", resp.StatusCode, resp.Header.Get("Content-Type"), resp.Header.Get("X-Stream"))
	}
	// Output:
	// 401 text/plain; charset=utf-8 X-Stream=""
	// 200 text/event-stream; charset=utf-8 X-Stream="granted"
}

// A TopicHandler over the in-memory broker, with two of its optional
// metrics hooks. Hijack is left off (the default): the stream is an
// ordinary response, which the logging middleware sees end.
func ExampleTopicHandler() {
	b := membroker.New(membroker.Config{})
	defer b.Close()
	var delivered atomic.Int64
	closed := make(chan sse.CloseReason, 1)
	events := &sse.TopicHandler{Broker: b, Metrics: sse.Metrics{
		Delivered:    func(*broker.Event, time.Time) { delivered.Add(1) },
		StreamClosed: func(reason sse.CloseReason) { closed <- reason },
	}}
	logged := make(chan string, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		events.ServeHTTP(w, r)
		logged <- r.URL.Path + " ended" // an access log line, at the end of the stream
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	var c sse.Client
	c.OnOpen = func(*http.Response) {
		_, _ = b.Publish(context.Background(), "news", broker.Message{Type: "update", Data: "hello"})
	}
	_ = c.Subscribe(ctx, srv.URL+"/events?topic=news", func(ev sse.Event) error {
		fmt.Printf("%s: %s\n", ev.Type, ev.Data)
		cancel()
		return nil
	})
	fmt.Println(<-logged, <-closed, delivered.Load())
	// Output:
	// update: hello
	// /events ended client 1
}
