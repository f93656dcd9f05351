// Package statuspage is herald's live status page: plain HTML, CSS and
// JavaScript embedded in the binary, no build step, no third-party code and
// nothing loaded from elsewhere.
//
// The page reads the cluster view the server exposes under /api (GET
// /api/nodes, /api/topics, /api/topics/{topic} and the SSE stream GET
// /api/status/stream), sending the admin key as a Bearer token. It is
// served at /status, with its assets under /status/:
//
//	GET /status             the page (index.html; /status/ too)
//	GET /status/status.js   its script
//	GET /status/status.css  its style sheet
package statuspage

import (
	"embed"
	"net/http"
)

//go:embed static/index.html static/status.js static/status.css
var files embed.FS

// CSP allows the page's own files and same-origin requests only: no inline
// script or style, no framing, no form posts elsewhere.
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// Paths are the paths Handler answers, each with its file and content type.
var Paths = map[string]struct{ File, ContentType string }{
	"/status":            {"static/index.html", "text/html; charset=utf-8"},
	"/status/":           {"static/index.html", "text/html; charset=utf-8"},
	"/status/status.js":  {"static/status.js", "text/javascript; charset=utf-8"},
	"/status/status.css": {"static/status.css", "text/css; charset=utf-8"},
}

type asset struct {
	ctype string
	body  []byte
}

// Handler serves the page at the paths listed in Paths (GET and HEAD;
// anything else under /status is 404, another method 405). Mount it at
// "GET /status" and "GET /status/".
func Handler() http.Handler {
	assets := make(map[string]asset, len(Paths))
	for p, f := range Paths {
		body, err := files.ReadFile(f.File)
		if err != nil {
			panic("statuspage: file missing from the embed: " + f.File)
		}
		assets[p] = asset{f.ContentType, body}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, ok := assets[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("Content-Type", a.ctype)
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cache-Control", "no-cache")
		if r.Method == http.MethodHead {
			return
		}
		_, _ = w.Write(a.body)
	})
}
