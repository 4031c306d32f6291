"""Documents: parsed, validated and limited once per query text, then reused.

A thousand clients sending the same subscription pay for one parse and one validation. Beside
graphql-core's specified rules (and its recommended introspection-depth rule), `OperationLimits`
bounds how deep an operation nests and how many fields it selects, fragments expanded, so that
one document cannot pin a worker; the parser itself is bounded in tokens.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    TypeInfo,
    TypeInfoVisitor,
    ValidationRule,
    VariableDefinitionNode,
    VariableNode,
    Visitor,
    parse,
    recommended_rules,
    specified_rules,
    validate,
    visit,
)

from switchboard_server.protocols.graphql.schema import error

# Far more than any real operation here; a bound on parsing work whatever the message size.
MAX_TOKENS = 5000
# Validated documents kept (and the errors of invalid ones): the most recently used.
CACHE_SIZE = 512
# The arguments that say where a subscription resumes: they differ per subscriber, the rest of a
# prepared subscription does not.
RESUME_ARGUMENTS = ("since", "epoch")
# `extensions.code` of a syntax error, or of a document over the parser's token bound.
PARSE_FAILED = "GRAPHQL_PARSE_FAILED"


@dataclass(frozen=True)
class Document:
    """A query text, parsed and checked: `errors` is empty when it may run."""

    node: DocumentNode | None
    errors: list[GraphQLError]
    # Variables used only as a subscription's `since`/`epoch`: left out of a feed's key.
    resume_variables: frozenset[str] = frozenset()


def limits_rule(max_depth: int, max_fields: int) -> type[ValidationRule]:
    """A validation rule refusing operations nested deeper than `max_depth` fields, or selecting
    more than `max_fields` fields, with fragments expanded (each fragment is measured once, so a
    fragment used a thousand times costs one walk)."""

    class OperationLimits(ValidationRule):
        def enter_operation_definition(self, node: OperationDefinitionNode, *_args: object) -> None:
            self._fragments: dict[str, tuple[int, int]] = {}
            self._visiting: set[str] = set()
            depth, fields = self._measure(node.selection_set, 0)
            name = f"operation {node.name.value!r}" if node.name else "the operation"
            if depth > max_depth:
                self.report_error(error("too_deep", f"{name} nests deeper than {max_depth} fields"))
            elif fields > max_fields:
                self.report_error(
                    error("too_many_fields", f"{name} selects more than {max_fields} fields (fragments expanded)")
                )

        def _measure(self, selection_set: SelectionSetNode, level: int) -> tuple[int, int]:
            """(depth, fields) of a selection set; stops early once past a limit. `level` counts
            every nesting, fragments too, so a chain of fragments cannot recurse unbounded."""
            depth = fields = 0
            if level > 2 * max_depth:
                return max_depth + 1, fields
            for selection in selection_set.selections:
                if isinstance(selection, FieldNode):
                    sub_depth, sub_fields = (
                        self._measure(selection.selection_set, level + 1) if selection.selection_set else (0, 0)
                    )
                    sub_depth += 1
                    sub_fields += 1
                elif isinstance(selection, InlineFragmentNode):
                    sub_depth, sub_fields = self._measure(selection.selection_set, level + 1)
                else:
                    sub_depth, sub_fields = self._spread(selection, level)
                depth = max(depth, sub_depth)
                fields += sub_fields
                if depth > max_depth or fields > max_fields:
                    break
            return depth, fields

        def _spread(self, spread: FragmentSpreadNode, level: int) -> tuple[int, int]:
            name = spread.name.value
            known = self._fragments.get(name)
            if known is not None:
                return known
            fragment = self.context.get_fragment(name)
            if fragment is None or name in self._visiting:
                return 0, 0  # unknown fragments and cycles are other rules' errors
            self._visiting.add(name)
            measured = self._fragments[name] = self._measure(fragment.selection_set, level + 1)
            self._visiting.discard(name)
            return measured

    return OperationLimits


def resume_variables(schema: GraphQLSchema, node: DocumentNode) -> frozenset[str]:
    """The variables whose every use is a `since` or `epoch` argument of a subscription field."""
    type_info = TypeInfo(schema)
    uses: Counter[str] = Counter()
    resume: Counter[str] = Counter()

    class Uses(Visitor):
        def enter_argument(self, argument, *_args):
            if (
                isinstance(argument.value, VariableNode)
                and argument.name.value in RESUME_ARGUMENTS
                and type_info.get_parent_type() is schema.subscription_type
            ):
                resume[argument.value.name.value] += 1

        def enter_variable(self, variable, _key, parent, *_args):
            if not isinstance(parent, VariableDefinitionNode):
                uses[variable.name.value] += 1

    visit(node, TypeInfoVisitor(type_info, Uses()))
    return frozenset(name for name, count in resume.items() if uses[name] == count)


class Documents:
    """Query texts to checked documents, the most recently used kept."""

    def __init__(self, schema: GraphQLSchema, max_depth: int, max_fields: int) -> None:
        self._schema = schema
        self._rules = (*specified_rules, *recommended_rules, limits_rule(max_depth, max_fields))
        self._cache: OrderedDict[str, Document] = OrderedDict()

    def get(self, query: str) -> Document:
        document = self._cache.get(query)
        if document is not None:
            self._cache.move_to_end(query)
            return document
        document = self._check(query)
        self._cache[query] = document
        if len(self._cache) > CACHE_SIZE:
            self._cache.popitem(last=False)
        return document

    def _check(self, query: str) -> Document:
        try:
            node = parse(query, max_tokens=MAX_TOKENS)
        except GraphQLError as syntax:
            # The code clients already know from Apollo Server for a document that does not parse.
            syntax.extensions = {**(syntax.extensions or {}), "code": PARSE_FAILED}
            return Document(None, [syntax])
        errors = validate(self._schema, node, self._rules)
        if errors:
            return Document(None, errors)
        return Document(node, [], resume_variables(self._schema, node))
