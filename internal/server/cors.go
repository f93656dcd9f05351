package server

import (
	"net/http"
	"slices"
)

// cors answers browsers from the origins of --cors-origins: it adds the
// Access-Control-* headers to answers and serves preflight requests
// (OPTIONS with Access-Control-Request-Method). Requests from other origins
// pass through without CORS headers, so the browser hides the answer from
// the page. An empty list turns CORS off.
type cors struct {
	origins []string // "*" allows any origin, without credentials
	methods string   // Access-Control-Allow-Methods of preflight answers
	headers string   // Access-Control-Allow-Headers of preflight answers
}

func (c *cors) wrap(next http.Handler) http.Handler {
	if len(c.origins) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		h.Add("Vary", "Origin")
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		switch {
		case slices.Contains(c.origins, origin):
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
		case slices.Contains(c.origins, "*"):
			h.Set("Access-Control-Allow-Origin", "*")
		default:
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != "" {
			h.Add("Vary", "Access-Control-Request-Method")
			h.Add("Vary", "Access-Control-Request-Headers")
			h.Set("Access-Control-Allow-Methods", c.methods)
			h.Set("Access-Control-Allow-Headers", c.headers)
			h.Set("Access-Control-Max-Age", "600")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}
