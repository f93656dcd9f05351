package auth

import (
	"net/http"
	"net/url"

	"github.com/herald-sse/herald/pkg/sse"
)

// QueryTopics returns the topics of a GET /events request: its "topic"
// query parameters, as sse.TopicHandler reads them.
func QueryTopics(r *http.Request) []string {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil // the handler answers 400 before the hook runs
	}
	return q["topic"]
}

// OnConnect returns an sse.OnConnect hook for a TopicHandler: it admits a
// request whose token allows subscribing to every topic that topics(r)
// returns (nil means QueryTopics), answers 401 with WWW-Authenticate for a
// missing or invalid token and 403 for a token without the right, and
// ends the stream when the token expires (sse.ExpireAt). With subscribing
// unprotected (no tokens configured, or AnonymousSubscribe) it admits
// every request.
//
// The answer never depends on whether a topic exists: authorization looks
// at the token and the requested names only.
func (a *Authorizer) OnConnect(topics func(*http.Request) []string) sse.OnConnect {
	if topics == nil {
		topics = QueryTopics
	}
	return func(r *http.Request) (int, http.Header, error) {
		g, err := a.AuthorizeSubscribe(r, topics(r))
		if err != nil {
			h := http.Header{}
			if c := Challenge(err); c != "" {
				h.Set("WWW-Authenticate", c)
			}
			h.Set("Cache-Control", "no-store")
			return Status(err), h, &clientError{err}
		}
		if g != nil && !g.Expires.IsZero() {
			sse.ExpireAt(r, g.Expires)
		}
		return sse.DefaultOnConnect(r)
	}
}

// clientError shows the client the error without the package prefix.
type clientError struct{ err error }

func (e *clientError) Error() string { return Message(e.err) }
func (e *clientError) Unwrap() error { return e.err }
