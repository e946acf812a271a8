package dcmhead

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"
)

// walkCorpusFile walks one corpus file's data set.
func walkCorpusFile(c corpusFile) (Summary, error) {
	ds := c.dataSet()
	return Walk(bytes.NewReader(c.data), c.meta.dataSetOffset, int64(len(ds)), c.enc)
}

// TestOracleSuyashkumar compares the walk with an independent full parser,
// github.com/suyashkumar/dicom, on every corpus file it can parse.
func TestOracleSuyashkumar(t *testing.T) {
	// Files where the oracle's top-level element count legitimately differs
	// from the walk's, and why.
	countDiffers := map[string]string{}
	var parsed, compared int
	for _, c := range loadCorpus(t) {
		t.Run(c.File, func(t *testing.T) {
			opts := []dicom.ParseOption{
				dicom.SkipPixelData(),
				dicom.AllowMissingMetaElementGroupLength(),
				dicom.AllowUnknownSpecificCharacterSet(),
				dicom.AllowMismatchPixelDataLength(),
			}
			ods, oerr := parseOracle(filepath.Join(corpusDir, c.File), opts)
			sum, err := walkCorpusFile(c)
			if c.File == malformedFile {
				if err == nil {
					t.Fatal("walk accepted the malformed file")
				}
				if oerr == nil {
					t.Logf("oracle accepted the malformed file (it is lenient); walk rejected it: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			if oerr != nil {
				t.Logf("oracle cannot parse this file: %v", oerr)
				return
			}
			parsed++
			var oInst string
			if e, ferr := ods.FindElementByTag(tag.SOPInstanceUID); ferr == nil {
				if s, ok := e.Value.GetValue().([]string); ok && len(s) > 0 {
					oInst = strings.TrimRight(s[0], "\x00 ")
				}
			}
			if oInst != sum.SOPInstanceUID {
				t.Errorf("SOPInstanceUID: walk %q, oracle %q", sum.SOPInstanceUID, oInst)
			}
			n := 0
			for _, e := range ods.Elements {
				if e.Tag.Group != 0x0002 || !c.meta.present {
					n++
				}
			}
			if why, ok := countDiffers[c.File]; ok {
				t.Logf("element count: walk %d, oracle %d (%s)", sum.Elements, n, why)
				return
			}
			compared++
			if n != sum.Elements {
				t.Errorf("top-level elements: walk %d, oracle %d", sum.Elements, n)
			}
		})
	}
	t.Logf("oracle parsed %d files, element counts compared on %d", parsed, compared)
	// The oracle must actually have been exercised.
	if parsed < 45 {
		t.Errorf("oracle parsed only %d of 54 well-formed files", parsed)
	}
}

// parseOracle parses a file with the oracle, turning its panics into errors.
func parseOracle(path string, opts []dicom.ParseOption) (ds dicom.Dataset, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errPanic{r}
		}
	}()
	return dicom.ParseFile(path, nil, opts...)
}

type errPanic struct{ v any }

func (e errPanic) Error() string { return fmt.Sprintf("oracle panicked: %v", e.v) }

var dcmdumpTopLevel = regexp.MustCompile(`^\(([0-9a-f]{4}),([0-9a-f]{4})\) `)

// TestOracleDcmdump compares the top-level element count and UIDs with
// DCMTK's dcmdump, a third, independent implementation.
func TestOracleDcmdump(t *testing.T) {
	dcmdump, err := exec.LookPath("dcmdump")
	if err != nil {
		t.Skip("dcmdump not installed")
	}
	for _, c := range loadCorpus(t) {
		if c.File == malformedFile {
			continue
		}
		t.Run(c.File, func(t *testing.T) {
			out, err := exec.Command(dcmdump, "-q", "-M", "+uc", "-Un", filepath.Join(corpusDir, c.File)).Output()
			if err != nil {
				t.Fatalf("dcmdump: %v", err)
			}
			sum, err := walkCorpusFile(c)
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			_, dataSet, ok := strings.Cut(string(out), "# Dicom-Data-Set\n")
			if !ok {
				t.Fatalf("no data set in dcmdump output")
			}
			n := 0
			uids := map[string]string{}
			for _, line := range strings.Split(dataSet, "\n") {
				m := dcmdumpTopLevel.FindStringSubmatch(line)
				if m == nil || m[1] == "fffe" {
					continue
				}
				n++
				if v, ok := strings.CutPrefix(line[12:], "UI ["); ok {
					uids[m[1]+","+m[2]] = v[:strings.IndexByte(v, ']')]
				}
			}
			if n != sum.Elements {
				t.Errorf("top-level elements: walk %d, dcmdump %d", sum.Elements, n)
			}
			for key, got := range map[string]string{"0008,0016": sum.SOPClassUID, "0008,0018": sum.SOPInstanceUID, "0020,000d": sum.StudyInstanceUID, "0020,000e": sum.SeriesInstanceUID} {
				if uids[key] != got {
					t.Errorf("(%s): walk %q, dcmdump %q", key, got, uids[key])
				}
			}
		})
	}
}
