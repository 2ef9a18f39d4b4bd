// The parsed form of a Jinja template: expressions and statements, and the
// lexer and parser that make them (with transformers' whitespace settings:
// trim_blocks, lstrip_blocks, the template's final newline dropped).
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "jinja_value.h"

namespace interlace::model::jinja {

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // operands: the items
    kDict,     // operands: key, value, key, value, ...
    kAttr,     // operands[0].name
    kItem,     // operands[0][operands[1]]
    kSlice,    // operands[0][1:2:3], absent parts null
    kCall,     // operands[0](operands[1..]); the last keywords.size() operands are keyword arguments
    kFilter,   // operands[0] | name(operands[1..])
    kTest,     // operands[0] is [not] name(operands[1..])
    kUnary,    // name is "-", "+" or "not"
    kBinary,   // operands[0] name operands[1]; name is an arithmetic operator, "~", "and" or "or"
    kCompare,  // operands[0] ops[0] operands[1] ops[1] ...
    kCond,     // operands[0] if operands[1] else operands[2] (null: undefined)
  };
  Kind kind = Kind::kLiteral;
  int line = 0;
  Value literal;
  std::string name;
  std::vector<std::unique_ptr<Expr>> operands;
  std::vector<std::string> keywords;
  std::vector<std::string> ops;
  bool negated = false;
};
using ExprPtr = std::unique_ptr<Expr>;

struct Stmt;
using Body = std::vector<std::unique_ptr<Stmt>>;

struct Stmt {
  enum class Kind { kText, kOutput, kIf, kFor, kSet, kSetBlock, kMacro, kBreak, kContinue };
  Kind kind = Kind::kText;
  int line = 0;
  std::string text;                  // kText
  ExprPtr expr;                      // kOutput, kSet's value, kFor's iterable
  std::vector<ExprPtr> conditions;   // kIf: one per if/elif branch
  std::vector<Body> bodies;          // kIf: one per branch, then else; kFor: body, else; kMacro, kSetBlock: body
  std::vector<std::string> targets;  // kFor, kSet, kSetBlock: the names assigned
  std::string attribute;             // kSet on a namespace: targets[0].attribute
  ExprPtr filter;                    // kFor: the inline "if"
  std::string name;                  // kMacro
  std::vector<std::string> params;   // kMacro
  std::vector<ExprPtr> defaults;     // kMacro: one per parameter, null when none
};

struct Program {
  std::string name;
  Body body;
};

// Throws Error (line and message) on anything it does not understand.
std::shared_ptr<Program> parse_program(std::string_view source, std::string name);

}  // namespace interlace::model::jinja
