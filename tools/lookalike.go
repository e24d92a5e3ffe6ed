package tools

//go:generate go run ./internal/confusablesgen -out confusables_table.go

import (
	"fmt"
	"sort"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// confusable is one row of the look-alike table: a character that may stand
// in a domain label and the ASCII it is confused with.
type confusable struct {
	r        rune
	to       string // the ASCII it looks like (UTS #39 prototype, NFD)
	name     string // the character's Unicode name
	smallCap bool   // a Latin small capital, added by tollgate (UTS #39 keeps most of them apart)
}

// confusableOf looks r up in the generated table.
func confusableOf(r rune) (confusable, bool) {
	i := sort.Search(len(confusableRows), func(i int) bool { return confusableRows[i].r >= r })
	if i < len(confusableRows) && confusableRows[i].r == r {
		return confusableRows[i], true
	}
	return confusable{}, false
}

// asciiLookalike checks a label that is not ASCII against UTS #39's
// confusable skeleton (NFD, map each character to its prototype, NFD): when
// every character of it is ASCII or looks like ASCII, the skeleton is ASCII
// and the label passes for an ASCII name it is not (ɡoogle, gıthub, ꜱcope).
// Such a label is refused, naming each character and what it imitates. The
// mapping is Unicode's confusables.txt (see internal/confusablesgen) with case
// folded, as DNS folds it, plus the Latin small capitals (ɢ → g).
func asciiLookalike(label string) error {
	if isASCIIString(label) {
		return nil
	}
	var imitation strings.Builder
	var chars []string
	seen := map[rune]bool{}
	for _, r := range norm.NFD.String(label) {
		if r < utf8.RuneSelf {
			imitation.WriteRune(r)
			continue
		}
		c, ok := confusableOf(r)
		if !ok {
			return nil // a character no ASCII looks like: the name reads as what it is
		}
		to := strings.ToLower(c.to)
		imitation.WriteString(to)
		if !seen[r] {
			seen[r] = true
			chars = append(chars, fmt.Sprintf("U+%04X %s (%c) looks like %q", r, c.name, r, to))
		}
	}
	return fmt.Errorf("imitates the ASCII name %q: %s", imitation.String(), strings.Join(chars, "; "))
}

func isASCIIString(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
