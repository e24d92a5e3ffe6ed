package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"regexp"
	"sort"
	"time"
)

// scriptNameRE is the shape of a Worker name Cloudflare accepts.
var scriptNameRE = regexp.MustCompile(`^[a-z0-9_][a-z0-9_-]{0,62}$`)

func (sc *scriptRec) handlers() []string {
	out := []string{}
	for _, m := range sc.Modules {
		if m.Name != sc.MainModule {
			continue
		}
		for _, h := range []string{"fetch", "scheduled", "queue", "email"} {
			if bytes.Contains(m.Content, []byte(h)) {
				out = append(out, h)
			}
		}
	}
	return out
}

func (sc *scriptRec) json() map[string]any {
	return map[string]any{
		"id":                  sc.Name,
		"tag":                 sc.Tag,
		"etag":                sc.Etag,
		"created_on":          sc.CreatedOn.Format(time.RFC3339Nano),
		"modified_on":         sc.ModifiedOn.Format(time.RFC3339Nano),
		"compatibility_date":  sc.CompatibilityDate,
		"compatibility_flags": []string{},
		"handlers":            sc.handlers(),
		"has_modules":         true,
		"has_assets":          false,
		"last_deployed_from":  "api",
		"logpush":             false,
		"usage_model":         "standard",
		"entry_point":         sc.MainModule,
		"tail_consumers":      nil,
		"tags":                nil,
	}
}

func (s *Sandbox) handlePutScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	if !scriptNameRE.MatchString(name) {
		writeError(w, http.StatusBadRequest, codeScriptName, fmt.Sprintf("Worker name %q is invalid: use 1 to 63 lowercase letters, digits, - and _, not starting with -", name))
		return
	}
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	now := s.clock().UTC()
	up, err := parseScriptUpload(r.Header.Get("Content-Type"), body, now)
	if errors.Is(err, errTooLarge) {
		writeError(w, http.StatusBadRequest, codeScriptTooLarge, err.Error())
		return
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, codeScriptInvalid, err.Error())
		return
	}
	main := up.Meta.MainModule
	if main == "" {
		main = up.Meta.BodyPart
	}
	parts := [][]byte{[]byte(name), []byte(main), []byte(up.Meta.CompatibilityDate)}
	for _, m := range up.Modules {
		parts = append(parts, []byte(m.Name), []byte(m.ContentType), m.Content)
	}
	etag := deterministicHex(parts...) + deterministicHex(append(parts, []byte("etag"))...)

	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.st.Scripts[name]
	var prev *scriptRec
	if sc == nil {
		sc = &scriptRec{Name: name, Tag: deterministicHex([]byte("tag"), []byte(name)), CreatedOn: now}
		s.st.Scripts[name] = sc
	} else {
		cp := *sc
		prev = &cp
	}
	sc.Etag, sc.MainModule, sc.CompatibilityDate, sc.Modules, sc.ModifiedOn = etag, main, up.Meta.CompatibilityDate, up.Modules, now
	if err := s.saveLocked(); err != nil {
		if prev == nil {
			delete(s.st.Scripts, name)
		} else {
			*sc = *prev
		}
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	res := sc.json()
	res["startup_time_ms"] = 0
	writeResult(w, http.StatusOK, res)
}

func (s *Sandbox) handleListScripts(w http.ResponseWriter, _ *http.Request, _ *tokenRec) {
	s.mu.Lock()
	names := make([]string, 0, len(s.st.Scripts))
	for n := range s.st.Scripts {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]map[string]any, 0, len(names))
	for _, n := range names {
		out = append(out, s.st.Scripts[n].json())
	}
	s.mu.Unlock()
	writeResult(w, http.StatusOK, out)
}

// handleGetScript answers with the raw modules as multipart/form-data, as
// Cloudflare does for module Workers, naming the entry point in the
// cf-entrypoint header.
func (s *Sandbox) handleGetScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	s.mu.Lock()
	sc := s.st.Scripts[name]
	var mods []module
	var main string
	if sc != nil {
		mods, main = append([]module(nil), sc.Modules...), sc.MainModule
	}
	s.mu.Unlock()
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	for _, m := range mods {
		h := textproto.MIMEHeader{}
		h.Set("Content-Disposition", fmt.Sprintf(`form-data; name=%q; filename=%q`, m.Name, m.Name))
		h.Set("Content-Type", m.ContentType)
		pw, err := mw.CreatePart(h)
		if err != nil {
			writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
			return
		}
		_, _ = pw.Write(m.Content)
	}
	_ = mw.Close()
	w.Header().Set("Content-Type", mw.FormDataContentType())
	w.Header().Set("cf-entrypoint", main)
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

func (s *Sandbox) handleDeleteScript(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.st.Scripts[name]
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	delete(s.st.Scripts, name)
	if err := s.saveLocked(); err != nil {
		s.st.Scripts[name] = sc
		writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
		return
	}
	writeResult(w, http.StatusOK, nil)
}

func (s *Sandbox) handleAccountSubdomain(w http.ResponseWriter, _ *http.Request, _ *tokenRec) {
	writeResult(w, http.StatusOK, map[string]string{"subdomain": workersSubdomain})
}

// parseSubdomainToggle parses a scripts/{name}/subdomain POST body.
func parseSubdomainToggle(body []byte) (enabled, previews bool, err error) {
	var req struct {
		Enabled         *bool `json:"enabled"`
		PreviewsEnabled *bool `json:"previews_enabled"`
	}
	if err := decodeJSON(body, &req); err != nil {
		return false, false, err
	}
	if req.Enabled == nil {
		return false, false, errors.New("enabled: required; true or false")
	}
	if req.PreviewsEnabled != nil {
		previews = *req.PreviewsEnabled
	}
	return *req.Enabled, previews, nil
}

func (s *Sandbox) handleScriptSubdomain(w http.ResponseWriter, r *http.Request, _ *tokenRec) {
	name := r.PathValue("script")
	var enabled, previews bool
	if r.Method == http.MethodPost {
		body, ok := readBody(w, r)
		if !ok {
			return
		}
		var err error
		if enabled, previews, err = parseSubdomainToggle(body); err != nil {
			writeBadBody(w, codeScriptInvalid, err)
			return
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.st.Scripts[name]
	if sc == nil {
		writeError(w, http.StatusNotFound, codeWorkerNotFound, msgWorkerNotFound)
		return
	}
	if r.Method == http.MethodPost {
		old := *sc
		sc.WorkersDev, sc.PreviewsEnabled = enabled, previews
		if err := s.saveLocked(); err != nil {
			*sc = old
			writeError(w, http.StatusInternalServerError, codeUnknownError, msgUnknownError)
			return
		}
	}
	writeResult(w, http.StatusOK, map[string]bool{"enabled": sc.WorkersDev, "previews_enabled": sc.PreviewsEnabled})
}
