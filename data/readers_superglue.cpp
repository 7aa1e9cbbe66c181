// SuperGLUE JSONL readers: BoolQ, CB, COPA, MultiRC, RTE, WiC, WSC. Field names and label
// encodings follow the SuperGLUE release files; the record layout (one row per MultiRC answer,
// WSC spans fixed as "wsc.fixed") follows Hugging Face's super_glue script, which is what
// lm-evaluation-harness reads.
#include <fmt/format.h>

#include "data/reader_detail.h"
#include "data/text.h"

namespace mlr::data::detail {

namespace fs = std::filesystem;

namespace {

// Hugging Face super_glue.py _fix_wst: makes a span text that is not a substring of the passage
// match its case there, drops trailing periods and replaces newlines. (Its "theyscold" branch
// sets span2_index = 10 and leaves the text as it is, because str.replace's result is dropped.)
void fix_wsc_span(std::string& text, int64_t& span2_index, std::string& span_text, int64_t index) {
  if (text.find(span_text) != std::string::npos) return;
  if (span_text == "Kamenev and Zinoviev" || span_text == "Kamenev, Zinoviev, and Stalin") return;
  if (span_text.find("theyscold") != std::string::npos) span2_index = 10;
  const auto words = split_whitespace(text);
  if (index < 0 || index >= static_cast<int64_t>(words.size())) {
    throw BadRow(fmt::format("span index {} is outside the text's {} words", index, words.size()));
  }
  const char first = words[static_cast<size_t>(index)][0];
  std::string fixed = (first >= 'a' && first <= 'z') ? lower_first(span_text) : upper_first(span_text);
  while (!fixed.empty() && fixed.back() == '.') fixed.pop_back();
  fixed = replace_all(fixed, "\n", " ");
  if (text.find(fixed) == std::string::npos) {
    throw BadRow(fmt::format("span \"{}\" does not occur in the text", preview(span_text)));
  }
  span_text = fixed;
}

void read_wsc_row(const json& row, Record& r) {
  // The release nests the spans in "target"; Hugging Face exports have them at the top level.
  const json& spans = row.contains("target") ? get(row, "target") : row;
  if (!spans.is_object()) throw BadRow(fmt::format("field \"target\" is {}, expected an object", spans.type_name()));
  std::string text = get_string(row, "text");
  int64_t span1_index = get_int(spans, "span1_index");
  int64_t span2_index = get_int(spans, "span2_index");
  std::string span1_text = get_string(spans, "span1_text");
  std::string span2_text = get_string(spans, "span2_text");
  r.label = get_bool_label(row, "label");
  fix_wsc_span(text, span2_index, span1_text, span1_index);
  const int64_t span2_word = span2_index;  // _fix_wst reads the index before it may change it
  fix_wsc_span(text, span2_index, span2_text, span2_word);
  r.set("text", text);
  r.set("span1_index", std::to_string(span1_index));
  r.set("span2_index", std::to_string(span2_index));
  r.set("span1_text", span1_text);
  r.set("span2_text", span2_text);
  r.set("passage", wsc_passage(text, span2_index, span2_text));
  r.set("label", label_text(row["label"]));
}

void read_wic_row(const json& row, Record& r) {
  const std::string sentence1 = get_string(row, "sentence1");
  const std::string sentence2 = get_string(row, "sentence2");
  const int64_t start1 = get_int(row, "start1"), end1 = get_int(row, "end1");
  const int64_t start2 = get_int(row, "start2"), end2 = get_int(row, "end2");
  r.label = get_bool_label(row, "label");
  r.set("word", get_string(row, "word"));
  r.set("sentence1", sentence1);
  r.set("sentence2", sentence2);
  r.set("start1", std::to_string(start1));
  r.set("end1", std::to_string(end1));
  r.set("start2", std::to_string(start2));
  r.set("end2", std::to_string(end2));
  r.set("sentence1_word", utf8_slice(sentence1, start1, end1));
  r.set("sentence2_word", utf8_slice(sentence2, start2, end2));
  r.set("label", label_text(row["label"]));
}

// One record per answer option. The flat Hugging Face export has paragraph/question/answer/label
// on each line; the release nests passage.questions[].answers[].
void read_multirc_row(const json& row, std::vector<Record>& out) {
  if (row.contains("paragraph")) {
    Record r;
    r.set("paragraph", get_string(row, "paragraph"));
    r.set("question", get_string(row, "question"));
    r.set("answer", get_string(row, "answer"));
    r.label = get_bool_label(row, "label");
    r.set("label", label_text(row["label"]));
    out.push_back(std::move(r));
    return;
  }
  const json& passage = get(row, "passage");
  if (!passage.is_object()) throw BadRow(fmt::format("field \"passage\" is {}, expected an object", passage.type_name()));
  const std::string paragraph = get_string(passage, "text");
  const json& questions = get(passage, "questions");
  if (!questions.is_array()) throw BadRow(fmt::format("field \"passage.questions\" is {}, expected an array", questions.type_name()));
  for (size_t q = 0; q < questions.size(); ++q) {
    const json& question = questions[q];
    try {
      if (!question.is_object()) throw BadRow(fmt::format("it is {}, expected an object", question.type_name()));
      const std::string question_text = get_string(question, "question");
      const json& answers = get(question, "answers");
      if (!answers.is_array()) throw BadRow(fmt::format("field \"answers\" is {}, expected an array", answers.type_name()));
      for (size_t a = 0; a < answers.size(); ++a) {
        const json& answer = answers[a];
        try {
          if (!answer.is_object()) throw BadRow(fmt::format("it is {}, expected an object", answer.type_name()));
          Record r;
          r.set("paragraph", paragraph);
          r.set("question", question_text);
          r.set("answer", get_string(answer, "text"));
          r.label = get_bool_label(answer, "label");
          r.set("label", label_text(answer["label"]));
          out.push_back(std::move(r));
        } catch (const BadRow& e) {
          throw BadRow(fmt::format("answers[{}]: {}", a, e.what()));
        }
      }
    } catch (const BadRow& e) {
      throw BadRow(fmt::format("passage.questions[{}]: {}", q, e.what()));
    }
  }
}

}  // namespace

void read_superglue(Format format, const fs::path& path, int32_t file, ReadContext& ctx) {
  for_each_json_row(path, file, ctx, /*allow_array=*/false, [&](const json& row, int64_t) {
    if (format == Format::multirc) {
      // All answers of a passage line or none of them.
      std::vector<Record> records;
      read_multirc_row(row, records);
      for (auto& r : records) ctx.result.records.push_back(std::move(r));
      return;
    }
    Record r;
    switch (format) {
      case Format::boolq:
        r.set("passage", get_string(row, "passage"));
        r.set("question", get_string(row, "question"));
        r.label = get_bool_label(row, "label");
        break;
      case Format::cb:
        r.set("premise", get_string(row, "premise"));
        r.set("hypothesis", get_string(row, "hypothesis"));
        r.label = get_class_label(row, "label", {"entailment", "contradiction", "neutral"});
        break;
      case Format::rte:
        r.set("premise", get_string(row, "premise"));
        r.set("hypothesis", get_string(row, "hypothesis"));
        r.label = get_class_label(row, "label", {"entailment", "not_entailment"});
        break;
      case Format::copa: {
        r.set("premise", get_string(row, "premise"));
        r.set("choice1", get_string(row, "choice1"));
        r.set("choice2", get_string(row, "choice2"));
        const std::string question = get_string(row, "question");
        if (question != "cause" && question != "effect") {
          throw BadRow(fmt::format("field \"question\" is \"{}\", expected \"cause\" or \"effect\"", preview(question)));
        }
        r.set("question", question);
        r.set("connector", question == "cause" ? "because" : "therefore");
        r.label = get_class_label(row, "label", {"0", "1"});
        break;
      }
      case Format::wic: read_wic_row(row, r); break;
      case Format::wsc: read_wsc_row(row, r); break;
      default: throw BadRow(fmt::format("format {} is not a SuperGLUE format", format_name(format)));
    }
    if (!r.field("label")) r.set("label", label_text(row["label"]));
    ctx.result.records.push_back(std::move(r));
  });
}

}  // namespace mlr::data::detail
