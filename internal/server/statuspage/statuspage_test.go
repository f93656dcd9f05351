package statuspage

import (
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, nil))
	return rec
}

func TestHandler(t *testing.T) {
	h := Handler()
	for _, tc := range []struct{ path, ctype, contains string }{
		{"/status", "text/html; charset=utf-8", `<script src="/status/status.js">`},
		{"/status/", "text/html; charset=utf-8", `id="nodes"`},
		{"/status/status.js", "text/javascript; charset=utf-8", "window.heraldStatus"},
		{"/status/status.css", "text/css; charset=utf-8", ".card"},
	} {
		rec := get(t, h, "GET", tc.path)
		if rec.Code != 200 {
			t.Fatalf("GET %s: %d", tc.path, rec.Code)
		}
		for name, want := range map[string]string{
			"Content-Type":            tc.ctype,
			"Content-Security-Policy": CSP,
			"Cache-Control":           "no-cache",
			"X-Content-Type-Options":  "nosniff",
		} {
			if got := rec.Header().Get(name); got != want {
				t.Errorf("GET %s: %s %q, want %q", tc.path, name, got, want)
			}
		}
		if !strings.Contains(rec.Body.String(), tc.contains) {
			t.Errorf("GET %s lacks %q", tc.path, tc.contains)
		}
		head := get(t, h, "HEAD", tc.path)
		if head.Code != 200 || head.Body.Len() != 0 || head.Header().Get("Content-Type") != tc.ctype {
			t.Errorf("HEAD %s: %d, %d bytes, %q", tc.path, head.Code, head.Body.Len(), head.Header().Get("Content-Type"))
		}
	}
	for _, p := range []string{"/status/nope.js", "/status/static/index.html", "/status/index.html", "/", "/status.js"} {
		if rec := get(t, h, "GET", p); rec.Code != 404 {
			t.Errorf("GET %s: %d, want 404", p, rec.Code)
		}
	}
	if rec := get(t, h, "POST", "/status"); rec.Code != 405 || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("POST /status: %d, Allow %q", rec.Code, rec.Header().Get("Allow"))
	}
}

// TestCSP: the policy lets the page's own script and style sheet run
// (script-src and style-src 'self') and nothing inline or from elsewhere.
func TestCSP(t *testing.T) {
	directives := map[string]string{}
	for _, d := range strings.Split(CSP, ";") {
		f := strings.Fields(d)
		if len(f) == 0 {
			continue
		}
		directives[f[0]] = strings.Join(f[1:], " ")
	}
	for name, want := range map[string]string{
		"default-src":     "'none'",
		"script-src":      "'self'",
		"style-src":       "'self'",
		"connect-src":     "'self'",
		"frame-ancestors": "'none'",
		"base-uri":        "'none'",
	} {
		if directives[name] != want {
			t.Errorf("CSP %s is %q, want %q", name, directives[name], want)
		}
	}
	if strings.Contains(CSP, "unsafe") || strings.Contains(CSP, "*") || strings.Contains(CSP, "http") {
		t.Errorf("CSP allows too much: %s", CSP)
	}
}

// TestSameOrigin: the page loads only its own assets (absolute paths this
// handler serves), runs no inline script or style, and its script puts
// network data into the page without innerHTML and calls only /api/.
func TestSameOrigin(t *testing.T) {
	h := Handler()
	page := get(t, h, "GET", "/status").Body.String()
	refs := regexp.MustCompile(`(?i)\b(?:src|href|action|data)\s*=\s*"([^"]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("the page references %d assets, want its script and style sheet", len(refs))
	}
	for _, m := range refs {
		ref := m[1]
		if _, ok := Paths[ref]; !ok || !strings.HasPrefix(ref, "/status/") {
			t.Errorf("the page references %q, not one of its own assets", ref)
		}
		if rec := get(t, h, "GET", ref); rec.Code != 200 {
			t.Errorf("GET %s (referenced by the page): %d", ref, rec.Code)
		}
	}
	for _, bad := range []string{"http://", "https://", "//", "<style", " style=", " on"} {
		for _, attrOrTag := range regexp.MustCompile(`<[^>]*>`).FindAllString(page, -1) {
			if bad == " on" {
				if regexp.MustCompile(`\son[a-z]+\s*=`).MatchString(attrOrTag) {
					t.Errorf("inline event handler in %s", attrOrTag)
				}
				continue
			}
			if strings.Contains(attrOrTag, bad) {
				t.Errorf("the page has %q in %s", bad, attrOrTag)
			}
		}
	}
	if regexp.MustCompile(`<script(?:\s[^>]*)?>[^<]+</script>`).MatchString(page) {
		t.Error("the page has an inline script")
	}
	js := get(t, h, "GET", "/status/status.js").Body.String()
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "http://", "https://"} {
		if strings.Contains(js, bad) && !(bad == "http://" && strings.Count(js, "http://") == strings.Count(js, "http://www.w3.org/2000/svg")) {
			t.Errorf("status.js uses %q", bad)
		}
	}
	for _, m := range regexp.MustCompile(`fetch\(\s*"([^"]*)"`).FindAllStringSubmatch(js, -1) {
		if !strings.HasPrefix(m[1], "/api/") {
			t.Errorf("status.js fetches %q, outside /api/", m[1])
		}
	}
	css := get(t, h, "GET", "/status/status.css").Body.String()
	if strings.Contains(css, "url(") || strings.Contains(css, "@import") {
		t.Error("status.css loads something")
	}
}
