package server

import (
	"embed"
	"net/http"
)

// demoFiles is the demo page: plain HTML, CSS and JavaScript, no build step
// and nothing loaded from elsewhere.
//
//go:embed demo/index.html demo/demo.js demo/demo.css
var demoFiles embed.FS

// demoCSP allows the page's own files and same-origin requests only.
const demoCSP = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// mountDemo serves the demo page at / and its assets beside it.
func mountDemo(mux *http.ServeMux) {
	for pattern, file := range map[string]struct{ name, ctype string }{
		"GET /{$}":      {"demo/index.html", "text/html; charset=utf-8"},
		"GET /demo.js":  {"demo/demo.js", "text/javascript; charset=utf-8"},
		"GET /demo.css": {"demo/demo.css", "text/css; charset=utf-8"},
	} {
		body, err := demoFiles.ReadFile(file.name)
		if err != nil {
			panic("server: demo file missing from the embed: " + file.name)
		}
		ctype := file.ctype
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("Content-Type", ctype)
			h.Set("Content-Security-Policy", demoCSP)
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Cache-Control", "no-cache")
			if r.Method == http.MethodHead {
				return
			}
			_, _ = w.Write(body)
		})
	}
}
