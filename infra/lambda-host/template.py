"""template.yaml as the local Lambda host reads it: CloudFormation's short tags, parameters,
conditions and the intrinsic functions the relay's template uses, resolved against the
resources the host creates (moto does not run SAM transforms, so the host reads the template
itself).
"""

import json
import re

import yaml

REGION = "eu-central-1"
ACCOUNT = "123456789012"  # moto's account


class NoValue:
    """AWS::NoValue: the property is left out."""


NO_VALUE = NoValue()


class Pending(Exception):
    """A reference to a resource that is not created yet."""


class Loader(yaml.SafeLoader):
    pass


def _tag(name, split=False):
    def construct(loader, node):
        if isinstance(node, yaml.ScalarNode):
            value = loader.construct_scalar(node)
            if split:
                value = value.split(".", 1)
        elif isinstance(node, yaml.SequenceNode):
            value = loader.construct_sequence(node, deep=True)
        else:
            value = loader.construct_mapping(node, deep=True)
        return {name: value}

    return construct


Loader.add_constructor("!Ref", _tag("Ref"))
Loader.add_constructor("!GetAtt", _tag("Fn::GetAtt", split=True))
Loader.add_constructor("!Condition", _tag("Condition"))
for _short in ("Sub", "If", "Not", "Equals", "And", "Or", "Contains", "Join", "Select", "Split",
               "FindInMap", "Base64", "ImportValue", "GetAZs", "Cidr"):
    Loader.add_constructor(f"!{_short}", _tag(f"Fn::{_short}"))


def load(path) -> dict:
    with open(path) as f:
        return yaml.load(f, Loader=Loader)


class Template:
    """The template with its parameters chosen (defaults unless overridden) and a table of what
    each logical id resolves to (`Ref` and `Fn::GetAtt`), filled in as resources are created."""

    def __init__(self, doc: dict, stack_name: str, overrides: dict):
        self.doc = doc
        self.stack_name = stack_name
        self.params = {}
        for name, spec in (doc.get("Parameters") or {}).items():
            if name in overrides:
                self.params[name] = str(overrides[name])
            elif "Default" in spec:
                self.params[name] = str(spec["Default"])
            else:
                raise SystemExit(f"template parameter {name} has no default: pass --param {name}=...")
        unknown = set(overrides) - set(self.params)
        if unknown:
            raise SystemExit(f"not parameters of the template: {', '.join(sorted(unknown))}")
        self.refs = {}  # logical id -> Ref value
        self.attrs = {}  # (logical id, attribute) -> value
        self.local_urls = {}  # logical id of an HttpApi -> its local base URL
        self.conditions = {}
        for name, expr in (doc.get("Conditions") or {}).items():
            self.conditions[name] = bool(self.resolve(expr))

    @property
    def resources(self) -> dict:
        return self.doc.get("Resources") or {}

    def pseudo(self, name):
        return {
            "AWS::Region": REGION, "AWS::AccountId": ACCOUNT, "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name, "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackId": f"arn:aws:cloudformation:{REGION}:{ACCOUNT}:stack/{self.stack_name}/local",
            "AWS::NoValue": NO_VALUE,
        }[name]

    def ref(self, name):
        if name.startswith("AWS::"):
            return self.pseudo(name)
        if name in self.params:
            return self.params[name]
        if name in self.refs:
            return self.refs[name]
        if name in self.resources:
            raise Pending(name)
        raise SystemExit(f"!Ref {name}: no such parameter or resource")

    def get_att(self, logical, attr):
        if (logical, attr) in self.attrs:
            return self.attrs[(logical, attr)]
        raise Pending(f"{logical}.{attr}")

    def sub(self, arg):
        text, extra = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        # An execute-api address of an HTTP API served here is its local address.
        def api(m):
            if m.group(1) in self.local_urls:
                return self.local_urls[m.group(1)]
            raise Pending(m.group(1))

        text = re.sub(r"https://\$\{(\w+)\}\.execute-api\.\$\{AWS::Region\}\.\$\{AWS::URLSuffix\}", api, text)

        def var(m):
            name = m.group(1)
            if name in extra:
                return str(self.resolve(extra[name]))
            if "." in name and not name.startswith("AWS::"):
                logical, attr = name.split(".", 1)
                return str(self.get_att(logical, attr))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}!]+)\}", var, text)

    def resolve(self, value):
        if isinstance(value, list):
            out = [self.resolve(v) for v in value]
            return [v for v in out if v is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                return self.get_att(arg[0], arg[1])
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                return self.resolve(arg[1] if self.conditions[arg[0]] else arg[2])
            if key == "Fn::Not":
                return not self.resolve(arg[0])
            if key == "Fn::Equals":
                a, b = self.resolve(arg[0]), self.resolve(arg[1])
                return str(a) == str(b)
            if key == "Fn::And":
                return all(self.resolve(a) for a in arg)
            if key == "Fn::Or":
                return any(self.resolve(a) for a in arg)
            if key == "Condition":
                return self.conditions[arg]
            if key == "Fn::Contains":
                return str(self.resolve(arg[1])) in [str(v) for v in self.resolve(arg[0])]
            if key == "Fn::Join":
                return arg[0].join(str(v) for v in self.resolve(arg[1]))
            if key == "Fn::Select":
                return self.resolve(arg[1])[int(self.resolve(arg[0]))]
            if key == "Fn::Split":
                return self.resolve(arg[1]).split(arg[0])
            if key.startswith("Fn::"):
                raise SystemExit(f"{key} is not supported by the local host")
        out = {k: self.resolve(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not NO_VALUE}

    def outputs(self) -> dict:
        out = {}
        for name, spec in (self.doc.get("Outputs") or {}).items():
            try:
                out[name] = self.resolve(spec["Value"])
            except Pending:
                continue  # a resource the host does not run (an alarm topic, say)
        return out


def env_value(v) -> str:
    """An environment variable's value as Lambda sets it (numbers and booleans as text)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return str(v)
