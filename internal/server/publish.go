package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/herald-sse/herald/internal/auth"
	"github.com/herald-sse/herald/pkg/broker"
)

// retryAfterSeconds is sent with 503 answers.
const retryAfterSeconds = "2"

// publishHandler serves POST /publish: form fields or a JSON object with
// topic, optional event and data. It answers 200 {"id":"..."} or an error
// status with {"error":"..."}.
type publishHandler struct {
	broker       broker.Broker
	metrics      *Metrics
	log          *slog.Logger
	maxBody      int64
	maxEvent     int64
	timeout      time.Duration // of the broker call (--publish-timeout)
	allowRemote  bool          // publish from non-loopback peers without auth
	crossOrigin  *http.CrossOriginProtection
	remoteNotice string
	// auth, if it protects publishing, must accept the request's bearer
	// credential; the loopback rule then does not apply.
	auth *auth.Authorizer
	// limit, if set, rate-limits requests per credential (per peer
	// address without authentication).
	limit *rateLimiter
}

// publishRequest is the JSON body of POST /publish.
type publishRequest struct {
	Topic string `json:"topic"`
	Event string `json:"event"`
	Data  string `json:"data"`
}

// httpError is an answer other than 200.
type httpError struct {
	status int
	msg    string
	header http.Header // extra answer headers (WWW-Authenticate, Retry-After)
}

func (e *httpError) Error() string { return e.msg }

func errorf(status int, format string, a ...any) *httpError {
	return &httpError{status: status, msg: fmt.Sprintf(format, a...)}
}

func (h *publishHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, herr := h.serve(w, r)
	if herr != nil {
		h.metrics.PublishError(herr.status)
		for k, v := range herr.header {
			w.Header()[k] = v
		}
		switch herr.status {
		case http.StatusMethodNotAllowed:
			w.Header().Set("Allow", "POST, OPTIONS")
		case http.StatusServiceUnavailable:
			w.Header().Set("Retry-After", retryAfterSeconds)
		}
		if herr.status >= 500 {
			h.log.Warn("publish failed", "status", herr.status, "error", herr.msg, "remote", r.RemoteAddr)
		} else {
			h.log.Debug("publish refused", "status", herr.status, "error", herr.msg, "remote", r.RemoteAddr)
		}
		writeJSON(w, herr.status, map[string]string{"error": herr.msg})
		return
	}
	h.metrics.Published()
	writeID(w, id)
}

func (h *publishHandler) serve(w http.ResponseWriter, r *http.Request) (string, *httpError) {
	if r.Method != http.MethodPost {
		return "", errorf(http.StatusMethodNotAllowed, "method %s not allowed: use POST", r.Method)
	}
	var grant *auth.Grant
	if h.auth.PublishProtected() {
		g, err := h.auth.PublishGrant(r)
		if err != nil {
			return "", authError(err)
		}
		grant = g
	} else if !h.allowRemote && !isLoopback(r.RemoteAddr) {
		return "", errorf(http.StatusForbidden, "%s", h.remoteNotice)
	}
	if h.limit != nil {
		rateKey := "ip:" + peerHost(r.RemoteAddr)
		if grant != nil {
			rateKey = grant.Principal
		}
		if ok, wait := h.limit.allow(rateKey); !ok {
			herr := errorf(http.StatusTooManyRequests, "publish rate limit reached (--publish-rate); retry later")
			herr.header = http.Header{"Retry-After": {strconv.Itoa(retryAfter(wait))}}
			return "", herr
		}
	}
	if h.crossOrigin != nil {
		if err := h.crossOrigin.Check(r); err != nil {
			return "", errorf(http.StatusForbidden, "cross-origin publish refused: add the page's origin to --cors-origins to allow it")
		}
	}
	req, herr := h.decode(w, r)
	if herr != nil {
		return "", herr
	}
	if err := broker.ValidateTopic(req.Topic); err != nil {
		if req.Topic == "" {
			return "", errorf(http.StatusBadRequest, "missing topic")
		}
		return "", errorf(http.StatusBadRequest, "%v", err)
	}
	if grant != nil && !grant.Allows(auth.Publish, req.Topic) {
		return "", authError(fmt.Errorf("%w: the credential does not allow publishing to %q", auth.ErrForbidden, req.Topic))
	}
	msg := broker.Message{Type: req.Event, Data: req.Data}
	if err := broker.ValidateMessage(msg); err != nil {
		return "", errorf(http.StatusBadRequest, "%v", err)
	}
	if int64(len(req.Data)) > h.maxEvent {
		return "", errorf(http.StatusRequestEntityTooLarge, "data is %d bytes, the limit is %d (--max-event-bytes)", len(req.Data), h.maxEvent)
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.timeout)
	defer cancel()
	id, err := h.broker.Publish(ctx, req.Topic, msg)
	switch {
	case err == nil:
		return id, nil
	case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrInvalidMessage):
		return "", errorf(http.StatusBadRequest, "%v", err)
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, broker.ErrClosed):
		return "", errorf(http.StatusServiceUnavailable, "broker unavailable, retry later: %v", err)
	case errors.Is(err, context.DeadlineExceeded) && r.Context().Err() == nil:
		return "", errorf(http.StatusServiceUnavailable, "broker did not answer within %v (--publish-timeout), retry later", h.timeout)
	default:
		return "", errorf(http.StatusInternalServerError, "publish failed: %v", err)
	}
}

// decode reads the request body as a form, a multipart form or JSON.
func (h *publishHandler) decode(w http.ResponseWriter, r *http.Request) (publishRequest, *httpError) {
	var req publishRequest
	if r.ContentLength > h.maxBody {
		return req, tooLarge(h.maxBody)
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.maxBody)
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return req, errorf(http.StatusUnsupportedMediaType, "missing Content-Type: send application/x-www-form-urlencoded, multipart/form-data or application/json")
	}
	mediaType := ct
	if ct != formType && ct != jsonType { // the common cases need no parsing
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return req, errorf(http.StatusUnsupportedMediaType, "bad Content-Type %q: %v", ct, err)
		}
		mediaType = mt
	}
	switch mediaType {
	case jsonType:
		return decodeJSON(r.Body, h.maxBody)
	case formType:
		if err := r.ParseForm(); err != nil {
			return req, bodyError(err, h.maxBody, "bad form body")
		}
		return formFields(r.PostForm)
	case "multipart/form-data":
		// Everything fits in memory: the body is capped at maxBody.
		if err := r.ParseMultipartForm(h.maxBody); err != nil {
			return req, bodyError(err, h.maxBody, "bad multipart body")
		}
		defer func() { _ = r.MultipartForm.RemoveAll() }()
		if len(r.MultipartForm.File) > 0 {
			return req, errorf(http.StatusBadRequest, "file parts are not accepted: send topic, event and data as plain fields")
		}
		return formFields(r.MultipartForm.Value)
	default:
		return req, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q: send application/x-www-form-urlencoded, multipart/form-data or application/json", mediaType)
	}
}

func decodeJSON(body io.Reader, maxBody int64) (publishRequest, *httpError) {
	var req publishRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		if err == io.EOF {
			return req, errorf(http.StatusBadRequest, "empty JSON body: send {\"topic\":...,\"data\":...}")
		}
		return req, bodyError(err, maxBody, "bad JSON")
	}
	// Exactly one value: anything but whitespace after it is an error.
	if _, err := dec.Token(); err != io.EOF {
		if err != nil {
			return req, bodyError(err, maxBody, "bad JSON after the object")
		}
		return req, errorf(http.StatusBadRequest, "bad JSON: unexpected data after the object")
	}
	return req, nil
}

const (
	formType = "application/x-www-form-urlencoded"
	jsonType = "application/json"
)

// formFields picks topic, event and data; each may appear once.
func formFields(v map[string][]string) (publishRequest, *httpError) {
	var req publishRequest
	for _, f := range [...]struct {
		name string
		dst  *string
	}{{"topic", &req.Topic}, {"event", &req.Event}, {"data", &req.Data}} {
		name, dst := f.name, f.dst
		switch vals := v[name]; len(vals) {
		case 0:
		case 1:
			*dst = vals[0]
		default:
			return req, errorf(http.StatusBadRequest, "field %q given %d times; publish one event per request", name, len(vals))
		}
	}
	return req, nil
}

func bodyError(err error, maxBody int64, what string) *httpError {
	if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
		return tooLarge(maxBody)
	}
	return errorf(http.StatusBadRequest, "%s: %v", what, err)
}

func tooLarge(maxBody int64) *httpError {
	return errorf(http.StatusRequestEntityTooLarge, "request body over %d bytes (--max-body-bytes)", maxBody)
}

// authError answers an authorization failure: 401 with a Bearer
// challenge, or 403.
func authError(err error) *httpError {
	herr := errorf(auth.Status(err), "%s", auth.Message(err))
	if c := auth.Challenge(err); c != "" {
		herr.header = http.Header{"Www-Authenticate": {c}}
	}
	return herr
}

// peerHost is the address part of a peer "host:port".
func peerHost(remoteAddr string) string {
	if host, _, err := net.SplitHostPort(remoteAddr); err == nil {
		return host
	}
	return remoteAddr
}

// isLoopback reports whether the TCP peer (never a forwarded header) is a
// loopback address: 127.0.0.0/8 or ::1.
func isLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		host = remoteAddr
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}
	return ip.Unmap().IsLoopback()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal error"}`)
	}
	writeJSONBytes(w, status, append(b, '\n'))
}

// writeID answers a publish: {"id":"..."}. Event IDs are plain ASCII
// (brokers make them), written without encoding/json; anything else takes
// the general path.
func writeID(w http.ResponseWriter, id string) {
	for i := 0; i < len(id); i++ {
		if c := id[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			writeJSON(w, http.StatusOK, map[string]string{"id": id})
			return
		}
	}
	var buf [160]byte
	b := append(append(append(buf[:0], `{"id":"`...), id...), "\"}\n"...)
	writeJSONBytes(w, http.StatusOK, b)
}

// Header values shared by every JSON answer (net/http only reads them).
var (
	jsonContentType = []string{"application/json"}
	noStore         = []string{"no-store"}
	noSniff         = []string{"nosniff"}
)

func writeJSONBytes(w http.ResponseWriter, status int, b []byte) {
	h := w.Header()
	h["Content-Type"] = jsonContentType
	h["Content-Length"] = []string{strconv.Itoa(len(b))}
	h["Cache-Control"] = noStore
	h["X-Content-Type-Options"] = noSniff
	w.WriteHeader(status)
	_, _ = w.Write(b)
}
