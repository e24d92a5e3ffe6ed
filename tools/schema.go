package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/google/jsonschema-go/jsonschema"
	"github.com/mark3labs/mcp-go/mcp"
	"github.com/mark3labs/mcp-go/server"
)

// inputSchema builds a tool's input schema from its typed args struct (json
// and jsonschema tags), then lets refine add the constraints tags cannot
// express (ranges, patterns, lengths, defaults). The result always has
// additionalProperties false.
func inputSchema[T any](refine func(props map[string]*jsonschema.Schema)) json.RawMessage {
	s, err := jsonschema.For[T](schemaOptions())
	if err != nil {
		panic(fmt.Sprintf("input schema for %T: %v", *new(T), err))
	}
	s.AdditionalProperties = &jsonschema.Schema{Not: &jsonschema.Schema{}}
	if refine != nil {
		refine(s.Properties)
	}
	raw, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return raw
}

// withInput sets a tool's input schema from T.
func withInput[T any](refine func(props map[string]*jsonschema.Schema)) mcp.ToolOption {
	raw := inputSchema[T](refine)
	return func(t *mcp.Tool) {
		t.InputSchema.Type = ""
		t.RawInputSchema = raw
	}
}

// withOutput sets a tool's output schema from T.
func withOutput[T any]() mcp.ToolOption {
	s, err := jsonschema.For[T](schemaOptions())
	if err != nil {
		panic(fmt.Sprintf("output schema for %T: %v", *new(T), err))
	}
	raw, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return mcp.WithRawOutputSchema(raw)
}

// schemaOptions describes the types the schema generator cannot infer:
// arguments and results carried as raw JSON objects, and timestamps.
func schemaOptions() *jsonschema.ForOptions {
	return &jsonschema.ForOptions{TypeSchemas: map[reflect.Type]*jsonschema.Schema{
		reflect.TypeFor[json.RawMessage](): {Type: "object"},
		reflect.TypeFor[time.Time]():       {Type: "string", Format: "date-time"},
	}}
}

func ptr[T any](v T) *T { return &v }

// decodeArgs decodes tool arguments strictly: unknown fields, wrong types and
// missing required fields (but those named in optional) are all reported at
// once, by name, with what is accepted.
func decodeArgs[T any](raw json.RawMessage, optional ...string) (T, error) {
	var out T
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		raw = []byte("{}")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return out, &InputError{Problem: "arguments must be a JSON object", Allowed: "an object with the fields " + strings.Join(fieldNames[T](), ", ")}
	}
	known := fieldNames[T]()
	var errs InputErrors
	for name := range fields {
		if !slices.Contains(known, name) {
			errs = append(errs, &InputError{Field: name, Problem: "unknown argument", Allowed: strings.Join(known, ", ")})
		}
	}
	for _, name := range requiredFields[T]() {
		if slices.Contains(optional, name) {
			continue
		}
		if v, ok := fields[name]; !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			errs = append(errs, &InputError{Field: name, Problem: "is required"})
		}
	}
	// Decode field by field so every type error is reported, not just the first.
	rv := reflect.ValueOf(&out).Elem()
	rt := rv.Type()
	for i := range rt.NumField() {
		f := rt.Field(i)
		name := jsonName(f)
		v, ok := fields[name]
		if name == "" || !ok || bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
			continue
		}
		if err := json.Unmarshal(v, rv.Field(i).Addr().Interface()); err != nil {
			errs = append(errs, &InputError{Field: name, Problem: typeProblem(v), Allowed: kindOf(f.Type)})
		}
	}
	sort.SliceStable(errs, func(i, j int) bool { return errs[i].Field < errs[j].Field })
	return out, errs.orNil()
}

func typeProblem(v json.RawMessage) string {
	var x any
	_ = json.Unmarshal(v, &x)
	switch t := x.(type) {
	case string:
		return "got a string"
	case bool:
		return "got a boolean"
	case float64:
		if t != float64(int64(t)) {
			return fmt.Sprintf("got the fractional number %v", t)
		}
		return "got a number"
	case []any:
		return "got an array"
	case map[string]any:
		return "got an object"
	default:
		return "has the wrong type"
	}
}

func kindOf(t reflect.Type) string {
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "an integer"
	case reflect.Pointer:
		return kindOf(t.Elem())
	case reflect.Map, reflect.Struct:
		return "an object"
	case reflect.Slice:
		if t == reflect.TypeFor[json.RawMessage]() {
			return "an object"
		}
		return "an array"
	}
	return t.String()
}

func jsonName(f reflect.StructField) string {
	tag := f.Tag.Get("json")
	if tag == "-" || !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(tag, ",")
	if name == "" {
		return f.Name
	}
	return name
}

func fieldNames[T any]() []string {
	rt := reflect.TypeFor[T]()
	var names []string
	for i := range rt.NumField() {
		if n := jsonName(rt.Field(i)); n != "" {
			names = append(names, n)
		}
	}
	return names
}

func requiredFields[T any]() []string {
	rt := reflect.TypeFor[T]()
	var names []string
	for i := range rt.NumField() {
		f := rt.Field(i)
		n := jsonName(f)
		if n == "" {
			continue
		}
		tag := f.Tag.Get("json")
		if !strings.Contains(tag, ",omitempty") && !strings.Contains(tag, ",omitzero") {
			names = append(names, n)
		}
	}
	return names
}

// rawArguments returns the call's arguments as JSON, preserving the exact
// bytes the client sent when available.
func rawArguments(req mcp.CallToolRequest) json.RawMessage {
	if len(req.Params.RawArguments) > 0 {
		return req.Params.RawArguments
	}
	if req.Params.Arguments == nil {
		return nil
	}
	b, err := json.Marshal(req.Params.Arguments)
	if err != nil {
		return nil
	}
	return b
}

// ToolError is a refusal the agent can act on (policy deny, budget block,
// upstream failure). It becomes a result with isError set, carrying the
// structured Operation when there is one.
type ToolError struct {
	Code       string
	Message    string
	Structured any
}

func (e *ToolError) Error() string { return e.Message }

// typed wraps a typed handler: strict decoding, and the mapping of errors to
// results. Input problems and refusals are tool results with isError set; only
// internal faults are returned as Go errors.
func typed[A any, R any](fn func(ctx context.Context, req mcp.CallToolRequest, args A) (R, error)) server.ToolHandlerFunc {
	return func(ctx context.Context, req mcp.CallToolRequest) (*mcp.CallToolResult, error) {
		args, err := decodeArgs[A](rawArguments(req))
		if err != nil {
			return mcp.NewToolResultError(err.Error()), nil
		}
		out, err := fn(ctx, req, args)
		if err != nil {
			return errorResult(err)
		}
		return structuredResult(out)
	}
}

// structuredResult is v as a tool result, encoded once: the structured
// content and, for clients that read only text, the same JSON indented.
func structuredResult(v any) (*mcp.CallToolResult, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	var text bytes.Buffer
	text.Grow(len(b) * 3 / 2)
	if err := json.Indent(&text, b, "", "  "); err != nil {
		return nil, fmt.Errorf("encode result: %w", err)
	}
	return mcp.NewToolResultStructured(json.RawMessage(b), text.String()), nil
}

func errorResult(err error) (*mcp.CallToolResult, error) {
	var te *ToolError
	switch {
	case IsInputError(err):
		return mcp.NewToolResultError(err.Error()), nil
	case errors.As(err, &te):
		res := mcp.NewToolResultError(te.Message)
		if te.Structured != nil {
			res.StructuredContent = te.Structured
		}
		return res, nil
	default:
		return nil, err
	}
}

// canonicalHash is the approval binding: sha256 over the canonical JSON of
// the normalised arguments (Go's encoder sorts map keys and struct fields are
// in declaration order, so equal arguments hash equally).
func canonicalHash(v any) (json.RawMessage, string, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, "", err
	}
	sum := sha256.Sum256(b)
	return b, hex.EncodeToString(sum[:]), nil
}
