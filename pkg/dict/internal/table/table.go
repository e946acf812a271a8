// Package table reads pkg/dict/dictionary.tsv and renders it as Go source for
// package dict (table_gen.go). It also converts DCMTK's dicom.dic into the
// rows of dictionary.tsv (FromDcmtk), which is how the TSV was made.
//
// It is shared by the generators (pkg/dict/gen.go, run by go generate, and
// pkg/dict/dcmtk.go, run by hand) and by the dict tests, which regenerate
// the table in memory and compare it with the committed table_gen.go (and,
// where DCMTK is installed, the TSV with a fresh conversion) so that they
// cannot drift apart.
package table

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"go/format"
	"io"
	"slices"
	"strconv"
	"strings"
)

// Row is one data element line of dictionary.tsv.
type Row struct {
	Tag     uint32
	VR      string // e.g. "CS", or "US or SS" where PS3.6 lists several
	VM      string // e.g. "1", "1-n", "2-2n"
	Keyword string
	Retired bool
}

// vrs are the value representations of PS3.5 6.2.
var vrs = map[string]bool{
	"AE": true, "AS": true, "AT": true, "CS": true, "DA": true, "DS": true, "DT": true,
	"FD": true, "FL": true, "IS": true, "LO": true, "LT": true, "OB": true, "OD": true,
	"OF": true, "OL": true, "OV": true, "OW": true, "PN": true, "SH": true, "SL": true,
	"SQ": true, "SS": true, "ST": true, "SV": true, "TM": true, "UC": true, "UI": true,
	"UL": true, "UN": true, "UR": true, "US": true, "UT": true, "UV": true,
}

// CheckVR accepts a VR of PS3.5 6.2, or several joined by " or " as PS3.6
// writes them ("US or SS", "OB or OW", "US or SS or OW").
func CheckVR(s string) error {
	parts := strings.Split(s, " or ")
	for _, p := range parts {
		if !vrs[p] {
			return fmt.Errorf("VR %q: %q is not a value representation", s, p)
		}
	}
	return nil
}

// checkVM accepts the value multiplicities of PS3.6: "N", "N-M", "N-n" and
// "N-Nn" (e.g. "2-2n"), with N and M positive decimal numbers.
func checkVM(s string) error {
	lo, hi, ranged := strings.Cut(s, "-")
	if !isNumber(lo) {
		return fmt.Errorf("VM %q is not a value multiplicity", s)
	}
	if ranged && hi != "n" && !isNumber(hi) && !(strings.HasSuffix(hi, "n") && isNumber(hi[:len(hi)-1])) {
		return fmt.Errorf("VM %q is not a value multiplicity", s)
	}
	return nil
}

func isNumber(s string) bool {
	if s == "" || s[0] == '0' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkKeyword accepts PS3.6 keywords: a letter, then letters and digits.
func checkKeyword(s string) error {
	if s == "" || !isLetter(s[0]) {
		return fmt.Errorf("keyword %q does not start with a letter", s)
	}
	for i := 1; i < len(s); i++ {
		if !isLetter(s[i]) && (s[i] < '0' || s[i] > '9') {
			return fmt.Errorf("keyword %q: %q is not a letter or digit", s, s[i])
		}
	}
	return nil
}

func isLetter(c byte) bool { return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' }

// checkTag rejects tags that are no standard data element: odd (private)
// groups, the command group 0000 (PS3.7), and the item and delimitation tags
// of group FFFE, which have no VR.
func checkTag(t uint32) error {
	switch g := t >> 16; {
	case g&1 == 1:
		return fmt.Errorf("tag %s: odd group, private", FormatTag(t))
	case g == 0x0000:
		return fmt.Errorf("tag %s: command group (PS3.7), not a data element", FormatTag(t))
	case g == 0xFFFE:
		return fmt.Errorf("tag %s: item or delimitation tag, not a data element", FormatTag(t))
	}
	return nil
}

// FormatTag writes a tag as PS3.6 does, "(0008,0060)".
func FormatTag(t uint32) string { return fmt.Sprintf("(%04X,%04X)", t>>16, t&0xFFFF) }

const numColumns = 5

// Parse reads dictionary.tsv. Blank lines and lines starting with '#' are
// ignored; every other line has five tab-separated columns: tag (eight
// upper-case hex digits, group then element), VR, VM, keyword, retired
// ("true" or "false").
//
// Parse rejects malformed rows, duplicate tags and duplicate keywords, naming
// the offending line. Rows must be in ascending tag order, which keeps diffs
// of the TSV readable.
func Parse(r io.Reader) ([]Row, error) {
	var (
		rows     []Row
		keywords = map[string]int{}
		lastLine int
		errs     []error
	)
	sc := bufio.NewScanner(r)
	sc.Buffer(nil, 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSuffix(sc.Text(), "\r")
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			continue
		}
		row, err := parseRow(line)
		if err != nil {
			errs = append(errs, fmt.Errorf("line %d: %w", n, err))
			continue
		}
		if len(rows) > 0 {
			prev := rows[len(rows)-1].Tag
			if row.Tag == prev {
				errs = append(errs, fmt.Errorf("line %d: tag %s already on line %d", n, FormatTag(row.Tag), lastLine))
				continue
			}
			if row.Tag < prev {
				errs = append(errs, fmt.Errorf("line %d: tag %s after %s: rows must be in ascending tag order", n, FormatTag(row.Tag), FormatTag(prev)))
				continue
			}
		}
		if prev, dup := keywords[row.Keyword]; dup {
			errs = append(errs, fmt.Errorf("line %d: keyword %s already on line %d", n, row.Keyword, prev))
			continue
		}
		keywords[row.Keyword] = n
		lastLine = n
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if len(rows) == 0 {
		return nil, errors.New("dictionary has no rows")
	}
	if len(rows) > 1<<16 {
		return nil, fmt.Errorf("dictionary has %d rows, more than the 16-bit keyword index holds", len(rows))
	}
	return rows, nil
}

func parseRow(line string) (Row, error) {
	cols := strings.Split(line, "\t")
	if len(cols) != numColumns {
		return Row{}, fmt.Errorf("%d columns, want %d", len(cols), numColumns)
	}
	for i, c := range cols {
		if c != strings.TrimSpace(c) {
			return Row{}, fmt.Errorf("column %d has leading or trailing white space", i+1)
		}
	}
	if len(cols[0]) != 8 || strings.ToUpper(cols[0]) != cols[0] {
		return Row{}, fmt.Errorf("tag %q: want eight upper-case hex digits", cols[0])
	}
	t, err := strconv.ParseUint(cols[0], 16, 32)
	if err != nil {
		return Row{}, fmt.Errorf("tag %q: want eight upper-case hex digits", cols[0])
	}
	row := Row{Tag: uint32(t), VR: cols[1], VM: cols[2], Keyword: cols[3]}
	if err := checkTag(row.Tag); err != nil {
		return Row{}, err
	}
	if err := CheckVR(row.VR); err != nil {
		return Row{}, fmt.Errorf("%s: %w", FormatTag(row.Tag), err)
	}
	if err := checkVM(row.VM); err != nil {
		return Row{}, fmt.Errorf("%s: %w", FormatTag(row.Tag), err)
	}
	if err := checkKeyword(row.Keyword); err != nil {
		return Row{}, fmt.Errorf("%s: %w", FormatTag(row.Tag), err)
	}
	switch cols[4] {
	case "true":
		row.Retired = true
	case "false":
	default:
		return Row{}, fmt.Errorf("%s: retired: %q is neither true nor false", FormatTag(row.Tag), cols[4])
	}
	return row, nil
}

// Render returns table_gen.go for rows (in ascending tag order, as Parse
// returns them): the entries as one slice sorted by tag, for ByTag, and a
// slice of their indexes sorted by keyword, for ByKeyword. Both are composite
// literals of constants, which the Go linker lays out as static data: the
// package has no init work to do.
func Render(rows []Row) ([]byte, error) {
	if !slices.IsSortedFunc(rows, func(a, b Row) int { return compareUint32(a.Tag, b.Tag) }) {
		return nil, errors.New("rows not in ascending tag order")
	}
	if len(rows) > 1<<16 {
		return nil, fmt.Errorf("%d rows, more than the 16-bit keyword index holds", len(rows))
	}
	byKeyword := make([]int, len(rows))
	for i := range byKeyword {
		byKeyword[i] = i
	}
	slices.SortFunc(byKeyword, func(a, b int) int { return strings.Compare(rows[a].Keyword, rows[b].Keyword) })
	for i := 1; i < len(byKeyword); i++ {
		if rows[byKeyword[i]].Keyword == rows[byKeyword[i-1]].Keyword {
			return nil, fmt.Errorf("keyword %s appears twice", rows[byKeyword[i]].Keyword)
		}
	}

	var b bytes.Buffer
	b.WriteString("// Code generated by gen.go from dictionary.tsv; DO NOT EDIT.\n\n")
	b.WriteString("package dict\n\n")
	fmt.Fprintf(&b, "// entries holds the %d data elements of dictionary.tsv, sorted by tag.\n", len(rows))
	b.WriteString("var entries = [...]Entry{\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\t{0x%08X, %s, %s, %s, %t},\n", r.Tag, strconv.Quote(r.VR), strconv.Quote(r.VM), strconv.Quote(r.Keyword), r.Retired)
	}
	b.WriteString("}\n\n")
	b.WriteString("// byKeyword holds the indexes in entries sorted by keyword (byte order).\n")
	b.WriteString("var byKeyword = [...]uint16{\n")
	for i := 0; i < len(byKeyword); i += 12 {
		b.WriteByte('\t')
		for j := i; j < min(i+12, len(byKeyword)); j++ {
			fmt.Fprintf(&b, "%d, ", byKeyword[j])
		}
		b.WriteByte('\n')
	}
	b.WriteString("}\n")

	out, err := format.Source(b.Bytes())
	if err != nil {
		return nil, fmt.Errorf("formatting generated source: %w", err)
	}
	return out, nil
}

func compareUint32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Generate parses dictionary.tsv from r and renders table_gen.go.
func Generate(r io.Reader) ([]byte, error) {
	rows, err := Parse(r)
	if err != nil {
		return nil, err
	}
	return Render(rows)
}
