package harness

import (
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// CorpusDir is the shared DICOM corpus: $DICOMGW_CORPUS when set, else
// ../shared/dicom-corpus beside the repository. A checkout made elsewhere
// (a CI clone in a scratch directory) finds it in the nearest ancestor that
// has shared/dicom-corpus, then at /work/shared/dicom-corpus. The files are
// read where they are, never copied into the repository.
func CorpusDir() string {
	if d := os.Getenv("DICOMGW_CORPUS"); d != "" {
		return d
	}
	beside := filepath.Join(RepoRoot(), "..", "shared", "dicom-corpus")
	candidates := []string{beside}
	for d := filepath.Dir(RepoRoot()); ; d = filepath.Dir(d) {
		candidates = append(candidates, filepath.Join(d, "shared", "dicom-corpus"))
		if filepath.Dir(d) == d {
			break
		}
	}
	candidates = append(candidates, "/work/shared/dicom-corpus")
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "MANIFEST.tsv")); err == nil {
			return c
		}
	}
	// None there: name the documented place, so the error says where
	// the corpus was expected.
	return beside
}

// CorpusFile is one row of the corpus MANIFEST.tsv.
type CorpusFile struct {
	Name              string
	Path              string
	Bytes             int64
	TransferSyntaxUID string
	SOPClassUID       string
	SOPInstanceUID    string
	StudyInstanceUID  string
	HasPart10         bool
	Notes             string
}

// Corpus reads the manifest of CorpusDir.
func Corpus() ([]CorpusFile, error) {
	dir := CorpusDir()
	f, err := os.Open(filepath.Join(dir, "MANIFEST.tsv"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.Comma = '\t'
	r.LazyQuotes = true
	r.FieldsPerRecord = -1
	rows, err := r.ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) < 2 {
		return nil, errors.New("empty manifest")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, need := range []string{"file", "bytes", "transfer_syntax_uid", "sop_class_uid", "sop_instance_uid", "study_instance_uid", "has_part10_header", "notes"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("manifest has no %q column", need)
		}
	}
	var out []CorpusFile
	for _, row := range rows[1:] {
		get := func(k string) string {
			if i := col[k]; i < len(row) {
				return row[i]
			}
			return ""
		}
		cf := CorpusFile{
			Name:              get("file"),
			TransferSyntaxUID: get("transfer_syntax_uid"),
			SOPClassUID:       get("sop_class_uid"),
			SOPInstanceUID:    get("sop_instance_uid"),
			StudyInstanceUID:  get("study_instance_uid"),
			HasPart10:         get("has_part10_header") == "yes",
			Notes:             get("notes"),
		}
		fmt.Sscan(get("bytes"), &cf.Bytes)
		cf.Path = filepath.Join(dir, cf.Name)
		out = append(out, cf)
	}
	return out, nil
}
