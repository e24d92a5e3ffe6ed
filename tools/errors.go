package tools

import (
	"errors"
	"fmt"
	"strings"
)

// InputError is bad input from the agent. It becomes a tool result with
// isError set, naming the argument, what was wrong and what is accepted, so the
// model can correct the call.
type InputError struct {
	Field   string // argument name, e.g. "domain" or "params.years"
	Problem string // what was wrong with the value that was sent
	Allowed string // what would have been accepted
}

func (e *InputError) Error() string {
	var b strings.Builder
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	if e.Allowed != "" {
		b.WriteString(". Allowed: ")
		b.WriteString(e.Allowed)
	}
	return b.String()
}

func inputErr(field, allowed, format string, args ...any) *InputError {
	return &InputError{Field: field, Problem: fmt.Sprintf(format, args...), Allowed: allowed}
}

// InputErrors is every problem found in one call's arguments, reported at once.
type InputErrors []*InputError

func (es InputErrors) Error() string {
	msgs := make([]string, len(es))
	for i, e := range es {
		msgs[i] = e.Error()
	}
	return "invalid arguments: " + strings.Join(msgs, "; ")
}

// orNil returns es as an error, or nil when it is empty.
func (es InputErrors) orNil() error {
	if len(es) == 0 {
		return nil
	}
	return es
}

// IsInputError reports whether err is bad input (as opposed to an internal fault).
func IsInputError(err error) bool {
	var one *InputError
	var many InputErrors
	return errors.As(err, &one) || errors.As(err, &many)
}
