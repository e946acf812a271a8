package harness

import (
	"bytes"
	"encoding/binary"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

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

// DataSetOffset returns where the data set starts in a DICOM file: after
// the preamble, "DICM" and the file meta group when there are any (PS3.10
// 7.1), else 0 (a raw data set). The meta group is walked element by element
// rather than trusting (0002,0000), which some files lack.
func DataSetOffset(path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	head := make([]byte, 132)
	if _, err := io.ReadFull(f, head); err != nil || string(head[128:]) != "DICM" {
		return 0, nil
	}
	off := int64(132)
	hdr := make([]byte, 12)
	for {
		if _, err := f.ReadAt(hdr[:8], off); err != nil {
			return 0, err
		}
		if binary.LittleEndian.Uint16(hdr) != 0x0002 {
			return off, nil
		}
		vr := string(hdr[4:6])
		switch vr {
		case "OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV", "SV", "UV":
			if _, err := f.ReadAt(hdr[:12], off); err != nil {
				return 0, err
			}
			off += 12 + int64(binary.LittleEndian.Uint32(hdr[8:]))
		default:
			off += 8 + int64(binary.LittleEndian.Uint16(hdr[6:]))
		}
	}
}

// DataSet returns the data set bytes of a DICOM file (see DataSetOffset).
func DataSet(path string) ([]byte, error) {
	off, err := DataSetOffset(path)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return b[off:], nil
}

// SpooledFiles lists the committed objects in a spool directory.
func SpooledFiles(spoolDir string) ([]string, error) {
	m, err := filepath.Glob(filepath.Join(spoolDir, "queue", "*.dcm"))
	return m, err
}

// PartialFiles lists what is in the spool's incoming directory.
func PartialFiles(spoolDir string) ([]string, error) {
	return filepath.Glob(filepath.Join(spoolDir, "incoming", "*"))
}

// LogLines returns the gateway's log lines whose msg equals msg.
func (g *Gateway) LogLines(msg string) []string {
	var out []string
	for _, l := range strings.Split(g.Logs(), "\n") {
		if bytes.Contains([]byte(l), []byte(`"msg":"`+msg+`"`)) {
			out = append(out, l)
		}
	}
	return out
}

// FileMeta is what the file meta information (PS3.10 7.1) of a Part 10
// file says about its object.
type FileMeta struct {
	MediaStorageSOPClassUID    string // (0002,0002)
	MediaStorageSOPInstanceUID string // (0002,0003)
	TransferSyntaxUID          string // (0002,0010)
}

// ReadFileMeta reads the UIDs of the file meta group of a Part 10 file.
// A raw data set (no "DICM") gives an empty FileMeta and no error.
func ReadFileMeta(path string) (FileMeta, error) {
	var fm FileMeta
	b, err := os.ReadFile(path)
	if err != nil {
		return fm, err
	}
	end, err := DataSetOffset(path)
	if err != nil || end == 0 {
		return fm, err
	}
	for off := 132; off+8 <= int(end); {
		elem := binary.LittleEndian.Uint16(b[off+2:])
		var n, hdr int
		switch string(b[off+4 : off+6]) {
		case "OB", "OW", "OF", "SQ", "UT", "UN", "UC", "UR", "OD", "OL", "OV", "SV", "UV":
			n, hdr = int(binary.LittleEndian.Uint32(b[off+8:])), 12
		default:
			n, hdr = int(binary.LittleEndian.Uint16(b[off+6:])), 8
		}
		if off+hdr+n > int(end) {
			return fm, fmt.Errorf("%s: meta element (0002,%04X) overruns the meta group", path, elem)
		}
		v := strings.TrimRight(string(b[off+hdr:off+hdr+n]), "\x00 ")
		switch elem {
		case 0x0002:
			fm.MediaStorageSOPClassUID = v
		case 0x0003:
			fm.MediaStorageSOPInstanceUID = v
		case 0x0010:
			fm.TransferSyntaxUID = v
		}
		off += hdr + n
	}
	return fm, nil
}
