package cloudflare

import (
	"bytes"
	"fmt"
	"mime/multipart"
	"net/textproto"
	"strings"
	"testing"
)

func multipartBody(parts ...[2]string) ([]byte, string) {
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, p := range parts {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, p[0], p[0]))
		h.Set("Content-Type", "application/javascript+module")
		w, _ := mw.CreatePart(h)
		_, _ = w.Write([]byte(p[1]))
	}
	_ = mw.Close()
	return buf.Bytes(), mw.FormDataContentType()
}

func TestMainModule(t *testing.T) {
	t.Parallel()
	two, twoCT := multipartBody([2]string{"lib.js", "export const a = 1"}, [2]string{"index.js", "main"})
	one, oneCT := multipartBody([2]string{"worker.js", "only"})
	empty, emptyCT := multipartBody()
	tests := []struct {
		name, ctype, entry string
		body               []byte
		wantName, want     string
		wantErr            string
	}{
		{"entry named", twoCT, "index.js", two, "index.js", "main", ""},
		{"entry absent from parts", twoCT, "app.js", two, "", "", "no part is the entry point"},
		{"no entry header: first part", oneCT, "", one, "worker.js", "only", ""},
		{"classic script", "application/javascript", "", []byte("addEventListener()"), "", "addEventListener()", ""},
		{"no parts", emptyCT, "", empty, "", "", "no parts"},
		{"no boundary", "multipart/form-data", "", []byte("x"), "", "", "without a boundary"},
		{"broken multipart", twoCT, "index.js", two[:len(two)/2], "", "", "script content"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			name, got, err := mainModule(tc.ctype, tc.entry, tc.body)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || name != tc.wantName || string(got) != tc.want {
				t.Fatalf("mainModule = %q, %q, %v", name, got, err)
			}
		})
	}
}

// FuzzMainModule feeds arbitrary script-content answers (untrusted input
// from the network) to the parser: it must never panic, and whatever it
// returns as the main module must be part of the body.
func FuzzMainModule(f *testing.F) {
	two, ct := multipartBody([2]string{"lib.js", "export const a = 1"}, [2]string{"index.js", "main"})
	f.Add(ct, "index.js", two)
	f.Add(ct, "", two)
	f.Add("application/javascript", "", []byte("addEventListener('fetch', e => {})"))
	f.Add("multipart/form-data; boundary=x", "a", []byte("--x\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nA\r\n--x--\r\n"))
	f.Fuzz(func(t *testing.T, ctype, entry string, body []byte) {
		_, got, err := mainModule(ctype, entry, body)
		if err == nil && len(got) > len(body) {
			t.Fatalf("main module (%d bytes) larger than the answer (%d)", len(got), len(body))
		}
	})
}
