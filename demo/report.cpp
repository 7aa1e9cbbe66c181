// The demo's tables (terminal) and its page (index.html: tables and SVG inline, no external assets).
#include <algorithm>
#include <cmath>

#include <fmt/format.h>

#include "demo/demo.h"

namespace mlr::demo {

namespace {

const char* kColors[] = {"#7f7f7f", "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"};

std::string short_name(const MethodResult& m) {
  if (m.name == "base") return "base";
  if (m.name == "lora") return "LoRA";
  if (m.name == "multilora") return "MultiLoRA";
  if (m.name == "smora") return "SMoRA";
  if (m.name == "full") return "full FT";
  return m.name;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  return s;
}

// The last line of a prompt (the question the model answers).
std::string last_lines(const std::string& prompt, int n) {
  size_t pos = prompt.size();
  for (int i = 0; i < n && pos != std::string::npos && pos > 0; ++i) pos = prompt.rfind('\n', pos - 1);
  return pos == std::string::npos ? prompt : prompt.substr(pos + 1);
}

std::string chance_text(const FamilySummary& f) { return f.chance > 0 ? fmt::format("{:.2f}", f.chance) : "~0"; }

// Grouped bars: per family, one bar per method, and the chance level as a dashed line.
std::string accuracy_svg(const DemoReport& r) {
  const double W = 760, H = 260, left = 45, top = 20, ph = 190;
  const double group_w = (W - left - 10) / static_cast<double>(std::max<size_t>(r.families.size(), 1));
  const double bar_w = (group_w - 20) / static_cast<double>(std::max<size_t>(r.methods.size(), 1));
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n",
      W, H + 30);
  for (int t = 0; t <= 4; ++t) {
    const double y = top + ph - ph * t / 4.0;
    out += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#ddd\"/><text x=\"{}\" y=\"{}\" "
                       "text-anchor=\"end\">{:.2f}</text>\n",
                       left, y, W - 10, y, left - 4, y + 4, t / 4.0);
  }
  for (size_t f = 0; f < r.families.size(); ++f) {
    const double x0 = left + 10 + group_w * static_cast<double>(f);
    for (size_t m = 0; m < r.methods.size(); ++m) {
      const double v = f < r.methods[m].accuracy.size() ? r.methods[m].accuracy[f] : 0.0;
      out += fmt::format("<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" fill=\"{}\"><title>{} {}: "
                         "{:.3f}</title></rect>\n",
                         x0 + bar_w * static_cast<double>(m), top + ph - ph * v, bar_w - 2, ph * v, kColors[m % 6],
                         escape(r.methods[m].label), r.families[f].name, v);
    }
    if (r.families[f].chance > 0) {
      const double y = top + ph - ph * r.families[f].chance;
      out += fmt::format("<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" stroke=\"#000\" "
                         "stroke-dasharray=\"4 3\"/>\n",
                         x0 - 3, y, x0 + group_w - 17, y);
    }
    out += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", x0 + (group_w - 20) / 2,
                       top + ph + 16, escape(r.families[f].name));
  }
  for (size_t m = 0; m < r.methods.size(); ++m)
    out += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>\n",
                       left + 10 + 120 * static_cast<double>(m), H + 12, kColors[m % 6],
                       left + 24 + 120 * static_cast<double>(m), H + 21, escape(short_name(r.methods[m])));
  return out + "</svg>\n";
}

// Training loss per step: the pretraining run, and each fine-tuning run.
std::string loss_svg(const std::vector<std::pair<std::string, const std::vector<double>*>>& runs, const char* title) {
  const double W = 420, H = 240, left = 45, top = 25, pw = 360, ph = 180;
  double ymax = 0;
  size_t n = 1;
  for (const auto& [label, losses] : runs) {
    for (double v : *losses)
      if (std::isfinite(v)) ymax = std::max(ymax, v);
    n = std::max(n, losses->size());
  }
  if (ymax <= 0) ymax = 1;
  std::string out = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"12\">\n"
      "<text x=\"{}\" y=\"15\">{}</text><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#444\"/>\n",
      W, H + 20, left, title, left, top, pw, ph);
  for (int t = 0; t <= 4; ++t)
    out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.1f}</text>\n", left - 4, top + ph - ph * t / 4.0 + 4,
                       ymax * t / 4.0);
  out += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">step (1..{})</text>\n", left + pw / 2, top + ph + 16, n);
  size_t color = 1;
  for (size_t i = 0; i < runs.size(); ++i, ++color) {
    const auto& losses = *runs[i].second;
    std::string pts;
    for (size_t k = 0; k < losses.size(); ++k) {
      const double x = left + (n == 1 ? 0 : pw * static_cast<double>(k) / static_cast<double>(n - 1));
      pts += fmt::format("{:.1f},{:.1f} ", x, top + ph - ph * std::min(losses[k], ymax) / ymax);
    }
    out += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n", kColors[color % 6], pts);
    out += fmt::format("<text x=\"{}\" y=\"{}\" fill=\"{}\">{}</text>\n", left + pw - 110, top + 16 + 15 * i,
                       kColors[color % 6], escape(runs[i].first));
  }
  return out + "</svg>\n";
}

}  // namespace

std::string report_tables(const DemoReport& r) {
  std::string out = fmt::format("\nheld-out accuracy per family (0-shot, lm-evaluation-harness scoring: BoolQ's prompt; "
                                "4-way: the log-likelihood of each option's text; counting: exact match of the greedy "
                                "answer)\n");
  out += fmt::format("{:<11} {:<22} {:>5} {:>5} {:>6}", "family", "shape", "train", "test", "chance");
  for (const MethodResult& m : r.methods) out += fmt::format(" {:>9}", short_name(m));
  out += "\n";
  for (size_t f = 0; f < r.families.size(); ++f) {
    const FamilySummary& fam = r.families[f];
    out += fmt::format("{:<11} {:<22} {:>5} {:>5} {:>6}", fam.name, fam.shape, fam.n_train, fam.n_test, chance_text(fam));
    for (const MethodResult& m : r.methods) out += fmt::format(" {:>9.2f}", f < m.accuracy.size() ? m.accuracy[f] : 0.0);
    out += "\n";
  }
  out += fmt::format("\n{:<26} {:>10} {:>8} {:>8} {:>8} {:>9} {:>8} {:>7} {:>7}\n", "method", "trainable", "train s",
                     "loss", "eval s", "eff.rank", "entropy", "top-1 E", "top-4 E");
  for (const MethodResult& m : r.methods) {
    if (m.name == "base") {
      out += fmt::format("{:<26} {:>10} {:>8.0f} {:>8.3f} {:>8.0f}\n", "base (pretrained here)", "-", r.pretrain_seconds,
                         r.pretrain_losses.empty() ? 0.0 : r.pretrain_losses.back(), m.eval_seconds);
      continue;
    }
    out += fmt::format("{:<26} {:>10} {:>8.0f} {:>8.3f} {:>8.0f} {:>9.2f} {:>8.3f} {:>7.3f} {:>7.3f}\n", m.label,
                       m.trainable_parameters, m.train_seconds, m.final_loss, m.eval_seconds, m.mean_effective_rank,
                       m.mean_entropy, m.mean_top1_energy, m.mean_top4_energy);
  }
  out += "(spectra: singular values of each method's weight update dW, mean over the adapted matrices; SMoRA: B A over "
         "all its rank-experts)\n";
  out += "\nsample greedy answers (first held-out question of each family)\n";
  for (size_t f = 0; f < r.families.size(); ++f) {
    if (r.methods.empty() || f >= r.methods.front().samples.size()) break;
    out += fmt::format("  {}: {}\n", r.families[f].name, one_line(last_lines(r.methods.front().samples[f].first,
                                                                              2)));
    for (const MethodResult& m : r.methods)
      out += fmt::format("    {:<10} -> {}\n", short_name(m), one_line(m.samples[f].second));
  }
  out += fmt::format("\n{}; device {}; total {:.0f} s\n", r.model_summary, r.device, r.total_seconds);
  return out;
}

std::string report_html(const DemoReport& r) {
  std::string h =
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>mlr demo: LoRA, MultiLoRA, SMoRA and full "
      "fine-tuning</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
      "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;text-align:right}"
      "td:first-child,th:first-child{text-align:left}pre{background:#f4f4f4;padding:6px;white-space:pre-wrap}"
      "</style></head><body>\n<h1>mlr demo</h1>\n";
  h += fmt::format("<p>A {} pretrained from random weights by mlr on a synthetic corpus, then fine-tuned on a "
                   "mixture of four task families with LoRA, MultiLoRA and SMoRA at the same rank budget, and with full "
                   "fine-tuning. Device {}; the whole run took {:.0f} s (pretraining {:.0f} s).</p>\n",
                   escape(r.model_summary), escape(r.device), r.total_seconds, r.pretrain_seconds);
  h += "<h2 id=\"accuracy\">Held-out accuracy per family</h2>\n<p>0-shot, lm-evaluation-harness prompts and scoring "
       "(the log-likelihood of each choice: BoolQ's prompt and \" yes\" / \" no\"; the 4-way families in the cloze "
       "form of the harness's mmlu_continuation, the question then each option's text; counting: exact match of the "
       "greedy answer).</p>\n"
       "<table id=\"accuracy-table\"><tr><th>family</th><th>shape</th><th>format</th><th>train</th><th>test</th>"
       "<th>chance</th>";
  for (const MethodResult& m : r.methods) h += "<th>" + escape(short_name(m)) + "</th>";
  h += "</tr>\n";
  for (size_t f = 0; f < r.families.size(); ++f) {
    const FamilySummary& fam = r.families[f];
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>", fam.name, escape(fam.shape),
                     fam.format, fam.n_train, fam.n_test, chance_text(fam));
    for (const MethodResult& m : r.methods) h += fmt::format("<td>{:.2f}</td>", f < m.accuracy.size() ? m.accuracy[f] : 0.0);
    h += "</tr>\n";
  }
  h += "</table>\n" + accuracy_svg(r);
  h += "<h2 id=\"methods\">Methods</h2>\n<table><tr><th>method</th><th>trainable parameters</th><th>train s</th>"
       "<th>final loss</th><th>eval s</th><th>mean effective rank of dW</th><th>spectral entropy</th><th>top-1 energy</th>"
       "<th>top-4 energy</th></tr>\n";
  for (const MethodResult& m : r.methods) {
    if (m.name == "base") continue;
    h += fmt::format("<tr><td>{}</td><td>{}</td><td>{:.0f}</td><td>{:.3f}</td><td>{:.0f}</td><td>{:.2f}</td><td>{:.3f}</td>"
                     "<td>{:.3f}</td><td>{:.3f}</td></tr>\n",
                     escape(m.label), m.trainable_parameters, m.train_seconds, m.final_loss, m.eval_seconds,
                     m.mean_effective_rank, m.mean_entropy, m.mean_top1_energy, m.mean_top4_energy);
  }
  h += "</table>\n<h2 id=\"spectra\">Singular-value spectra of the updates</h2>\n<p>Mean over the adapted matrices of "
       "the normalised singular values of dW and their cumulative energy (SMoRA: B A over all its rank-experts; full "
       "fine-tuning: W - W0).</p>\n" +
       r.spectra_svg;
  h += "<h2 id=\"losses\">Training loss</h2>\n";
  h += loss_svg({{"pretraining", &r.pretrain_losses}}, "pretraining (full training from random weights)");
  std::vector<std::pair<std::string, const std::vector<double>*>> ft;
  for (const MethodResult& m : r.methods)
    if (m.name != "base") ft.emplace_back(short_name(m), &m.losses);
  h += loss_svg(ft, "fine-tuning on the mixture");
  h += "<h2 id=\"samples\">Sample greedy answers</h2>\n";
  for (size_t f = 0; f < r.families.size(); ++f) {
    if (r.methods.empty() || f >= r.methods.front().samples.size()) break;
    h += fmt::format("<h3>{}</h3><pre>{}</pre><table><tr><th>method</th><th>answer</th></tr>\n", escape(r.families[f].name),
                     escape(r.methods.front().samples[f].first));
    for (const MethodResult& m : r.methods)
      h += fmt::format("<tr><td>{}</td><td style=\"text-align:left\"><code>{}</code></td></tr>\n", escape(m.label),
                       escape(m.samples[f].second));
    h += "</table>\n";
  }
  h += "<h2>Terminal tables</h2>\n<pre>" + escape(report_tables(r)) + "</pre>\n</body></html>\n";
  return h;
}

}  // namespace mlr::demo
