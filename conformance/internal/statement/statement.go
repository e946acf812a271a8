// Package statement generates the tables of dicomgw's DICOM Conformance
// Statement (conformance/statement.md) from the code's own tables: the SOP
// classes and transfer syntaxes of pkg/uid, the defaults and the
// implementation identification of pkg/dimse. Each table sits in the
// statement between marker comments,
//
//	<!-- BEGIN GENERATED name -->
//	...
//	<!-- END GENERATED name -->
//
// and Update rewrites what is between them. `go run ./conformance/gen`
// rewrites the file; conformance/statement_test.go fails when the file is
// not what Update would make of it.
package statement

import (
	"bytes"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// NotAccepted are the transfer syntaxes of pkg/uid that the gateway does
// not accept, and why: the retired media-only pseudo syntaxes of PS3.5,
// which cannot carry a data set over the network (pkg/dimse/negotiate.go
// excludes them; conformance/statement_test.go checks the statement's
// lists against a live negotiation).
var NotAccepted = map[string]string{
	"1.2.840.10008.1.2.6.1": "media only (PS3.10): MIME-encapsulated files, not a network encoding",
	"1.2.840.10008.1.2.6.2": "media only: an XML encoding of a data set, not a network encoding",
}

// AcceptedTransferSyntaxes are the transfer syntaxes the statement lists as
// accepted, in pkg/uid's order.
func AcceptedTransferSyntaxes() []uid.TransferSyntax {
	var out []uid.TransferSyntax
	for _, ts := range uid.TransferSyntaxes() {
		if _, no := NotAccepted[ts.UID]; !no {
			out = append(out, ts)
		}
	}
	return out
}

// Blocks returns every generated block by name, each ending in a newline.
func Blocks() map[string]string {
	return map[string]string{
		"overview":                  overview(),
		"implementation":            implementation(),
		"association-limits":        limits(),
		"sop-classes":               sopClasses(),
		"transfer-syntaxes":         transferSyntaxes(),
		"transfer-syntaxes-refused": refused(),
	}
}

var marker = regexp.MustCompile(`^<!-- (BEGIN|END) GENERATED ([a-z0-9-]+)(?: .*)? -->$`)

// Update replaces the content of every generated block of doc. It fails on
// a block it does not know, an unclosed or repeated block, or a block it
// generates that doc lacks.
func Update(doc []byte) ([]byte, error) {
	blocks := Blocks()
	seen := map[string]bool{}
	var out bytes.Buffer
	lines := strings.SplitAfter(string(doc), "\n")
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		out.WriteString(line)
		m := marker.FindStringSubmatch(strings.TrimRight(line, "\r\n"))
		if m == nil {
			continue
		}
		if m[1] == "END" {
			return nil, fmt.Errorf("line %d: END GENERATED %s without BEGIN", i+1, m[2])
		}
		name := m[2]
		body, ok := blocks[name]
		if !ok {
			return nil, fmt.Errorf("line %d: unknown generated block %q", i+1, name)
		}
		if seen[name] {
			return nil, fmt.Errorf("line %d: block %q appears twice", i+1, name)
		}
		seen[name] = true
		j := i + 1
		for ; j < len(lines); j++ {
			if e := marker.FindStringSubmatch(strings.TrimRight(lines[j], "\r\n")); e != nil {
				if e[1] != "END" || e[2] != name {
					return nil, fmt.Errorf("line %d: %s GENERATED %s inside block %q", j+1, e[1], e[2], name)
				}
				break
			}
		}
		if j == len(lines) {
			return nil, fmt.Errorf("line %d: block %q is not closed", i+1, name)
		}
		out.WriteString(body)
		out.WriteString(lines[j])
		i = j
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range blocks {
			if !yield(n) {
				return
			}
		}
	}) {
		if !seen[name] {
			return nil, fmt.Errorf("the statement has no block %q", name)
		}
	}
	return out.Bytes(), nil
}

// cell escapes text for a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func overview() string {
	return fmt.Sprintf(`| Networking: SOP classes | User of service (SCU) | Provider of service (SCP) |
| --- | --- | --- |
| **Verification** | | |
| Verification SOP Class | No | Yes |
| **Transfer** | | |
| %d Storage SOP Classes of PS3.4 Annex B (Table 4.2-2), retired ones included | Yes (forwarding to C-STORE destinations, 4.2.3) | Yes |
| Private and newer storage SOP classes (with `+"`--accept-unknown-sop-classes`"+`) | Yes (forwarding, as received) | Yes (optional) |
| **Workflow Management** | | |
| Storage Commitment Push Model SOP Class | No | Yes (unless `+"`--commitment off`"+`) |
| **Query/Retrieve** | | |
| Patient Root and Study Root Query/Retrieve Information Model – FIND | No | Yes (with `+"`--qr-destination`"+`, answered from QIDO-RS) |
| Patient Root and Study Root Query/Retrieve Information Model – MOVE and GET | No | Yes (with `+"`--qr-destination`"+`, retrieved with WADO-RS) |
| **Other Query/Retrieve models, other Workflow, Print, others** | No | No |

| Web services (PS3.18) | User agent | Origin server |
| --- | --- | --- |
| Store Instances (STOW-RS) | Yes (forwarding) | No |
`, len(uid.StorageSOPClasses()))
}

func implementation() string {
	return fmt.Sprintf("| | |\n| --- | --- |\n| Implementation Class UID | `%s` |\n| Implementation Version Name | `DICOMGW_` followed by the release version, cut to 16 characters (e.g. `DICOMGW_1.2.0`) |\n",
		dimse.ImplementationClassUID)
}

func duration(d time.Duration) string {
	switch {
	case d%time.Minute == 0:
		return fmt.Sprintf("%d min", int(d/time.Minute))
	default:
		return fmt.Sprintf("%d s", int(d/time.Second))
	}
}

func limits() string {
	rows := [][3]string{
		{"Maximum PDU length received (advertised in the A-ASSOCIATE-AC)", fmt.Sprintf("%d bytes", dimse.DefaultMaxPDULength), "`--max-pdu-length`"},
		{"Maximum PDU length sent", "the peer's maximum (no limit when the peer advertises 0)", "—"},
		{"Simultaneous associations", fmt.Sprint(dimse.DefaultMaxAssociations), "`--max-associations`"},
		{"Simultaneous associations from one peer address", "no limit beyond the above", "`--max-associations-per-host`"},
		{"Open TCP connections", "4 × associations + 64", "`--max-connections`"},
		{"Open TCP connections from one peer address", "a quarter of the above, at least associations + 16, at most half of the above", "`--max-connections-per-host`"},
		{"ARTIM timer (A-ASSOCIATE-RQ awaited; peer to close after release or abort)", duration(dimse.DefaultARTIMTimeout), "`--artim-timeout`"},
		{"Association idle timeout (nothing received)", duration(dimse.DefaultIdleTimeout), "`--idle-timeout`"},
		{"Time for one PDU to arrive once begun", duration(dimse.DefaultPDUTimeout), "`--pdu-timeout`"},
		{"Time for one write to the peer", duration(dimse.DefaultWriteTimeout), "`--write-timeout`"},
	}
	var b strings.Builder
	b.WriteString("| Parameter | Default | Flag |\n| --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r[0], r[1], r[2])
	}
	return b.String()
}

func sopClasses() string {
	var b strings.Builder
	b.WriteString("| SOP Class Name | SOP Class UID | SCU | SCP |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(&b, "| Verification SOP Class | `%s` | No | Yes |\n", uid.Verification)
	fmt.Fprintf(&b, "| Storage Commitment Push Model SOP Class | `%s` | No | Yes |\n", dimse.StorageCommitmentSOPClass)
	for _, e := range uid.StorageSOPClasses() {
		name := cell(e.Name)
		if e.Retired {
			name += " (Retired)"
		}
		fmt.Fprintf(&b, "| %s | `%s` | Yes | Yes |\n", name, e.UID)
	}
	return b.String()
}

func encoding(ts uid.TransferSyntax) string {
	var e string
	switch ts.Encoding {
	case uid.EncodingImplicitVRLittleEndian:
		e = "Implicit VR Little Endian"
	case uid.EncodingExplicitVRLittleEndian:
		e = "Explicit VR Little Endian"
	case uid.EncodingExplicitVRBigEndian:
		e = "Explicit VR Big Endian"
	case uid.EncodingDeflatedExplicitVRLittleEndian:
		e = "Deflated Explicit VR Little Endian"
	default:
		e = ts.Encoding.String()
	}
	if ts.Encapsulated {
		return e + ", encapsulated Pixel Data"
	}
	return e
}

func transferSyntaxes() string {
	var b strings.Builder
	b.WriteString("| Transfer Syntax Name | Transfer Syntax UID | Data set encoding |\n| --- | --- | --- |\n")
	for _, ts := range AcceptedTransferSyntaxes() {
		name := cell(ts.Name)
		if ts.Retired {
			name += " (Retired)"
		}
		fmt.Fprintf(&b, "| %s | `%s` | %s |\n", name, ts.UID, encoding(ts))
	}
	return b.String()
}

func refused() string {
	var b strings.Builder
	b.WriteString("| Transfer Syntax Name | Transfer Syntax UID | Why it is not accepted |\n| --- | --- | --- |\n")
	for _, ts := range uid.TransferSyntaxes() {
		if why, no := NotAccepted[ts.UID]; no {
			name := cell(ts.Name)
			if ts.Retired {
				name += " (Retired)"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s |\n", name, ts.UID, why)
		}
	}
	return b.String()
}
