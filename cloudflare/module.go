package cloudflare

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
)

// maxContentBytes bounds what GetWorker reads of a script's content.
const maxContentBytes = 64 << 20

// mainModule extracts the entry-point module from a script-content answer.
// Cloudflare answers a module Worker as multipart/form-data, one part per
// module, naming the entry point in the cf-entrypoint header; a classic
// script is the body itself. The answer is untrusted input.
func mainModule(contentType, entry string, body []byte) (name string, content []byte, err error) {
	if len(body) > maxContentBytes {
		return "", nil, fmt.Errorf("script content is %d bytes, above the %d this client reads", len(body), maxContentBytes)
	}
	mt, params, err := mime.ParseMediaType(contentType)
	if err != nil || mt != "multipart/form-data" {
		return entry, body, nil
	}
	if params["boundary"] == "" {
		return "", nil, errors.New("script content: multipart answer without a boundary")
	}
	mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
	var firstName string
	var first []byte
	for n := 0; ; n++ {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return "", nil, fmt.Errorf("script content: %w", err)
		}
		pname := part.FileName()
		if pname == "" {
			pname = part.FormName()
		}
		data, err := io.ReadAll(io.LimitReader(part, maxContentBytes))
		if err != nil {
			return "", nil, fmt.Errorf("script content part %q: %w", pname, err)
		}
		if entry != "" && pname == entry {
			return pname, data, nil
		}
		if n == 0 {
			firstName, first = pname, data
		}
	}
	if entry != "" {
		return "", nil, fmt.Errorf("script content: no part is the entry point %q", entry)
	}
	if first == nil {
		return "", nil, errors.New("script content: multipart answer with no parts")
	}
	// Without a cf-entrypoint header the first part is the main module, the
	// order in which it was uploaded.
	return firstName, first, nil
}
