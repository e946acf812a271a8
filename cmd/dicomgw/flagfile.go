package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// A flags file holds one flag per line, written as on the command line:
//
//	# comments and blank lines are allowed
//	--ae-title=KAAPANA
//	--calling-ae CT1@10.0.0.0/8
//	--accept-unknown-sop-classes
//
// Values are taken literally up to the end of the line (no quoting). Flags
// given on the command line win over the files; among files, later ones
// win for single-valued flags, and list flags (--ae-title, --calling-ae)
// collect the entries of every file.

// flagLine is one setting read from a flags file.
type flagLine struct {
	file     string
	line     int
	name     string
	value    string
	hasValue bool
}

func (l flagLine) where() string { return fmt.Sprintf("%s:%d", l.file, l.line) }

// readFlagFile parses a flags file; an error names the file and line.
func readFlagFile(path string) ([]flagLine, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("flags file: %w", err)
	}
	defer f.Close()
	var out []flagLine
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), 1<<20)
	n := 0
	for sc.Scan() {
		n++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		l := flagLine{file: path, line: n}
		body, ok := strings.CutPrefix(text, "--")
		if !ok {
			return nil, fmt.Errorf("%s: malformed line %q: want --name=value", l.where(), text)
		}
		if i := strings.IndexAny(body, "= \t"); i >= 0 {
			l.name, l.value, l.hasValue = body[:i], strings.TrimSpace(body[i+1:]), true
		} else {
			l.name = body
		}
		if !validFlagName(l.name) {
			return nil, fmt.Errorf("%s: malformed line %q: %q is not a flag name", l.where(), text, l.name)
		}
		out = append(out, l)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func validFlagName(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// applyFlagFiles sets, from each file in turn, every flag that the command
// line did not set.
func applyFlagFiles(fs *pflag.FlagSet, paths []string) error {
	fromCommandLine := map[string]bool{}
	fs.Visit(func(f *pflag.Flag) { fromCommandLine[f.Name] = true })
	for _, path := range paths {
		lines, err := readFlagFile(path)
		if err != nil {
			return err
		}
		for _, l := range lines {
			f := fs.Lookup(l.name)
			switch {
			case f == nil:
				return fmt.Errorf("%s: unknown flag --%s", l.where(), l.name)
			case l.name == "flagfile":
				return fmt.Errorf("%s: --flagfile cannot be used inside a flags file", l.where())
			case fromCommandLine[l.name]:
				continue
			}
			value := l.value
			if !l.hasValue {
				if f.NoOptDefVal == "" {
					return fmt.Errorf("%s: flag --%s needs a value (--%s=...)", l.where(), l.name, l.name)
				}
				value = f.NoOptDefVal
			}
			if err := fs.Set(l.name, value); err != nil {
				return fmt.Errorf("%s: invalid value %q for --%s: %v", l.where(), value, l.name, err)
			}
			if o, ok := f.Value.(originRecorder); ok {
				o.setOrigin(l.where())
			}
		}
	}
	return nil
}

// originRecorder is a repeatable flag whose values remember where each
// came from ("file:line", or "command line"), so that a check made once
// every flag is read (a route naming a destination that does not exist)
// can still name the line.
type originRecorder interface {
	setOrigin(where string)
}
