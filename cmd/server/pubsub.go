package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"
	"github.com/herald-sse/herald/pkg/broker"
	"github.com/herald-sse/herald/pkg/sse"
	"github.com/redis/go-redis/v9"
)

// stdin is what herald publish reads data and batches from (tests set it).
var stdin io.Reader = os.Stdin

const publishUsage = `Usage: herald publish [flags] <topic> [data]
       herald publish [flags] --ndjson < events.ndjson

Publishes one event and prints its id: over HTTP (POST /publish to --url)
or, with --redis-url, straight into Redis (FCALL <prefix>_publish). Without
data, or with data "-", the event's data is read from standard input.
With --ndjson, standard input is a batch (one JSON event per line,
{"topic":...,"event":...,"data":...,"idempotency_key":...}) sent in one
request; the answer (one result per event) is printed, and a batch is not
retried (retry the failed events yourself, with their keys).

A publish that gets no answer, a 503 or a 429 is retried (--retry) with the
same idempotency key, so a retry never publishes twice: without
--idempotency-key a random one is made for the event. Exit 0 when
published, 1 when not, 2 for bad flags.

Flags:
`

// publishCommand is herald publish.
func publishCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herald publish", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, publishUsage); fs.PrintDefaults() }
	base := fs.String("url", envOr(getenv, "HERALD_URL", "http://127.0.0.1:8080"), "herald's base URL (default $HERALD_URL or http://127.0.0.1:8080)")
	token := fs.String("token", getenv("HERALD_TOKEN"), "bearer credential: a token or the API key (default $HERALD_TOKEN)")
	event := fs.String("event", "", "event type (empty: message)")
	key := fs.String("idempotency-key", "", "idempotency key of the event (default: a random one when --retry > 0)")
	retries := fs.Int("retry", 3, "retries after no answer, 503 or 429, with the same key (0: none)")
	timeout := fs.Duration("timeout", 10*time.Second, "deadline of each attempt")
	ndjson := fs.Bool("ndjson", false, "publish the batch on standard input (NDJSON)")
	redisURL := fs.String("redis-url", "", "publish straight into this Redis (FCALL) instead of over HTTP")
	prefix := fs.String("redis-prefix", envOr(getenv, "HERALD_REDIS_PREFIX", "herald"), "herald's --redis-prefix (the function is <prefix>_publish)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "herald publish: "+format+"\n", a...)
		return 2
	}
	if *retries < 0 || *timeout <= 0 {
		return usage("--retry must be >= 0 and --timeout > 0")
	}
	if *key != "" {
		if err := broker.ValidateKey(*key); err != nil {
			return usage("--idempotency-key: %v", err)
		}
	} else if *retries > 0 && !*ndjson {
		*key = uuid.NewString()
	}
	var topic, data string
	var body []byte
	switch {
	case *ndjson:
		if fs.NArg() > 0 || *redisURL != "" || *event != "" || *key != "" {
			return usage("--ndjson takes the events from standard input: no topic, data, --event, --idempotency-key or --redis-url")
		}
		b, err := io.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "herald publish: reading standard input: %v\n", err)
			return 1
		}
		body = b
	case fs.NArg() == 1 || fs.NArg() == 2 && fs.Arg(1) == "-":
		topic = fs.Arg(0)
		b, err := io.ReadAll(stdin)
		if err != nil {
			fmt.Fprintf(stderr, "herald publish: reading standard input: %v\n", err)
			return 1
		}
		data = string(b)
	case fs.NArg() == 2:
		topic, data = fs.Arg(0), fs.Arg(1)
	default:
		return usage("want <topic> [data] (see herald publish --help)")
	}
	if topic != "" || !*ndjson {
		if err := broker.ValidateTopic(topic); err != nil {
			return usage("%v", err)
		}
		if err := broker.ValidateMessage(broker.Message{Type: *event}); err != nil {
			return usage("--event: %v", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var attempt func(ctx context.Context) (out string, retry bool, err error)
	if *redisURL != "" {
		opt, err := redis.ParseURL(*redisURL)
		if err != nil {
			return usage("--redis-url: %v", err)
		}
		opt.MaxRetries = -1 // retried here, with the key
		rdb := redis.NewClient(opt)
		defer rdb.Close()
		fcallArgs := []any{*event, data}
		if *key != "" {
			fcallArgs = append(fcallArgs, *key)
		}
		attempt = func(ctx context.Context) (string, bool, error) {
			id, err := rdb.FCall(ctx, *prefix+"_publish", []string{topic}, fcallArgs...).Text()
			var re redis.Error
			if err != nil && errors.As(err, &re) && strings.Contains(err.Error(), "herald: ") {
				return "", false, err // refused: retrying changes nothing
			}
			return id, err != nil, err
		}
	} else {
		u, err := url.Parse(strings.TrimRight(*base, "/") + "/publish")
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return usage("--url %q: want http(s)://host[:port]", *base)
		}
		ct := "application/x-ndjson"
		if !*ndjson {
			form := url.Values{"topic": {topic}, "data": {data}}
			if *event != "" {
				form.Set("event", *event)
			}
			body, ct = []byte(form.Encode()), "application/x-www-form-urlencoded"
		}
		client := &http.Client{}
		attempt = func(ctx context.Context) (string, bool, error) {
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
			if err != nil {
				return "", false, err
			}
			req.Header.Set("Content-Type", ct)
			if *key != "" {
				req.Header.Set("Idempotency-Key", *key)
			}
			if *token != "" {
				req.Header.Set("Authorization", "Bearer "+*token)
			}
			resp, err := client.Do(req)
			if err != nil {
				return "", ctx.Err() == nil || errors.Is(ctx.Err(), context.DeadlineExceeded), err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
			if err != nil {
				return "", true, err
			}
			var a struct{ ID, Error string }
			_ = json.Unmarshal(b, &a)
			switch {
			case resp.StatusCode == http.StatusOK && !*ndjson && a.ID != "":
				return a.ID, false, nil
			case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusMultiStatus && *ndjson:
				return strings.TrimSpace(string(b)), false, statusErr(resp.StatusCode, "")
			case resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusTooManyRequests:
				return "", true, statusErr(resp.StatusCode, a.Error)
			default:
				if a.Error == "" {
					a.Error = strings.TrimSpace(string(b))
				}
				return "", false, statusErr(resp.StatusCode, a.Error)
			}
		}
	}
	if *ndjson {
		*retries = 0 // events without a key could be published twice
	}
	delay := 200 * time.Millisecond
	for try := 0; ; try++ {
		actx, cancel := context.WithTimeout(ctx, *timeout)
		out, retry, err := attempt(actx)
		cancel()
		if err == nil || out != "" {
			fmt.Fprintln(stdout, out)
			if err != nil { // a batch with failed events
				fmt.Fprintf(stderr, "herald publish: %v: some events were not published (see the results)\n", err)
				return 1
			}
			return 0
		}
		if !retry || try >= *retries || ctx.Err() != nil {
			fmt.Fprintf(stderr, "herald publish: %v\n", err)
			return 1
		}
		fmt.Fprintf(stderr, "herald publish: %v; retrying in %v with the same idempotency key\n", err, delay)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			fmt.Fprintf(stderr, "herald publish: %v\n", ctx.Err())
			return 1
		}
		delay = min(2*delay, 5*time.Second)
	}
}

type httpStatusError struct {
	status int
	msg    string
}

func (e *httpStatusError) Error() string {
	if e.msg == "" {
		return fmt.Sprintf("server answered %d %s", e.status, http.StatusText(e.status))
	}
	return fmt.Sprintf("server answered %d: %s", e.status, e.msg)
}

func statusErr(status int, msg string) error {
	if status == http.StatusOK {
		return nil
	}
	return &httpStatusError{status, msg}
}

const subscribeUsage = `Usage: herald subscribe [flags] <topic> [topic...]

Follows topics on --url (GET /events) and prints each event as it arrives,
reconnecting and resuming like a browser. Readable lines by default
("<id> <type> <data>", line breaks in data shown as \n), or JSON lines with
--json ({"id","event","data"}). Resets (herald.reset) are printed like any
event. Ends with Ctrl-C, or after --count events.

Flags:
`

// subscribeCommand is herald subscribe.
func subscribeCommand(args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("herald subscribe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, subscribeUsage); fs.PrintDefaults() }
	base := fs.String("url", envOr(getenv, "HERALD_URL", "http://127.0.0.1:8080"), "herald's base URL (default $HERALD_URL or http://127.0.0.1:8080)")
	token := fs.String("token", getenv("HERALD_TOKEN"), "bearer token (default $HERALD_TOKEN)")
	lastID := fs.String("last-event-id", "", "resume after this event id (the id a previous subscribe printed last)")
	asJSON := fs.Bool("json", false, "print JSON lines")
	count := fs.Int("count", 0, "exit after this many events (0: run until interrupted)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() == 0 || *count < 0 {
		fmt.Fprintln(stderr, "herald subscribe: want one or more topics (see herald subscribe --help)")
		return 2
	}
	if err := broker.ValidateTopics(fs.Args()); err != nil {
		fmt.Fprintf(stderr, "herald subscribe: %v\n", err)
		return 2
	}
	u, err := url.Parse(strings.TrimRight(*base, "/") + "/events")
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "herald subscribe: --url %q: want http(s)://host[:port]\n", *base)
		return 2
	}
	u.RawQuery = url.Values{"topic": fs.Args()}.Encode()
	c := &sse.Client{LastEventID: *lastID, Header: http.Header{}, IdleTimeout: time.Minute}
	if *token != "" {
		c.Header.Set("Authorization", "Bearer "+*token)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	n := 0
	errDone := errors.New("done")
	enc := json.NewEncoder(stdout)
	err = c.Subscribe(ctx, u.String(), func(e sse.Event) error {
		if *asJSON {
			_ = enc.Encode(struct {
				ID    string `json:"id"`
				Event string `json:"event"`
				Data  string `json:"data"`
			}{e.ID, e.Type, e.Data})
		} else {
			typ := e.Type
			if typ == "" {
				typ = "message"
			}
			fmt.Fprintf(stdout, "%s %s %s\n", e.ID, typ, strings.ReplaceAll(e.Data, "\n", `\n`))
		}
		if n++; *count > 0 && n >= *count {
			return errDone
		}
		return nil
	})
	if errors.Is(err, errDone) || ctx.Err() != nil {
		return 0
	}
	fmt.Fprintf(stderr, "herald subscribe: %v\n", err)
	return 1
}

func envOr(getenv func(string) string, name, def string) string {
	if v := getenv(name); v != "" {
		return v
	}
	return def
}
