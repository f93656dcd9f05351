package server

import (
	"net/url"
	"testing"

	"pgregory.net/rapid"
)

// TestParseFormMatchesParseQuery: the hand-written form parser of POST
// /publish reads every body as url.ParseQuery + formFields would: the same
// fields, and an error exactly when they give one.
func TestParseFormMatchesParseQuery(t *testing.T) {
	alphabet := []string{"topic", "event", "data", "idempotency_key", "x", "=", "&", ";", "%", "%2", "%41", "%zz", "+", "a", "é", "\x00", "%26", "%3D"}
	rapid.Check(t, func(t *rapid.T) {
		parts := rapid.SliceOfN(rapid.SampledFrom(alphabet), 0, 24).Draw(t, "parts")
		body := ""
		for _, p := range parts {
			body += p
		}
		got, gotErr := parseForm([]byte(body))
		var want publishRequest
		var wantErr bool
		if vals, err := url.ParseQuery(body); err != nil {
			wantErr = true
		} else if req, herr := formFields(vals); herr != nil {
			wantErr = true
		} else {
			want = req
		}
		if (gotErr != nil) != wantErr {
			t.Fatalf("body %q: parseForm error %v, url.ParseQuery+formFields error %v", body, gotErr, wantErr)
		}
		if !wantErr && got != want {
			t.Fatalf("body %q: parseForm %+v, url.ParseQuery+formFields %+v", body, got, want)
		}
	})
}
