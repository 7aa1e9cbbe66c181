// What the SuperGLUE tasks of lm-evaluation-harness share (super_glue/<task>/default.yaml): the
// dataset aps/super_glue, train and validation splits, doc_to_target "label" and the tag.
#pragma once

#include <string>

#include "eval/task.h"

namespace mlr::eval {

inline TaskConfig superglue_config(std::string name, std::string dataset_name, double version) {
  TaskConfig c;
  c.name = std::move(name);
  c.tag = "super-glue-lm-eval-v1";
  c.version = version;
  c.dataset_path = "aps/super_glue";
  c.dataset_name = std::move(dataset_name);
  c.training_split = "train";
  c.validation_split = "validation";
  c.doc_to_target = "label";
  return c;
}

}  // namespace mlr::eval
