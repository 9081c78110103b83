"""The local REST APIs: routes read from the templates, and URL outputs pointed at loopback."""

from __future__ import annotations

import copy

from cloud_sniper.local.api import Route, local_outputs, routes_of
from cloud_sniper.local.deploy import DeployedStack

FUNCTION_ARN = {"Fn::GetAtt": ["ApprovalsFunction", "Arn"]}
INTEGRATION = {
    "IntegrationHttpMethod": "POST",
    "Type": "AWS_PROXY",
    "Uri": {
        "Fn::Join": [
            "",
            [
                "arn:",
                {"Ref": "AWS::Partition"},
                ":apigateway:",
                {"Ref": "AWS::Region"},
                ":lambda:path/2015-03-31/functions/",
                FUNCTION_ARN,
                "/invocations",
            ],
        ]
    },
}


def method(http_method: str, resource: dict) -> dict:
    return {
        "Type": "AWS::ApiGateway::Method",
        "Properties": {
            "HttpMethod": http_method,
            "ResourceId": resource,
            "RestApiId": {"Ref": "Api"},
            "AuthorizationType": "AWS_IAM",
            "Integration": INTEGRATION,
        },
    }


def resource(part: str, parent: dict) -> dict:
    return {
        "Type": "AWS::ApiGateway::Resource",
        "Properties": {"ParentId": parent, "PathPart": part, "RestApiId": {"Ref": "Api"}},
    }


# The shape CDK gives a RestApi with a Lambda proxy integration, as the approvals stack has it.
TEMPLATE = {
    "Resources": {
        "ApprovalsFunction": {
            "Type": "AWS::Lambda::Function",
            "Properties": {"FunctionName": "cloud-sniper-approvals"},
        },
        "Api": {"Type": "AWS::ApiGateway::RestApi", "Properties": {"Name": "approvals"}},
        "Approvals": resource("approvals", {"Fn::GetAtt": ["Api", "RootResourceId"]}),
        "Approval": resource("{id}", {"Ref": "Approvals"}),
        "Approve": resource("approve", {"Ref": "Approval"}),
        "ListMethod": method("GET", {"Ref": "Approvals"}),
        "ApproveMethod": method("POST", {"Ref": "Approve"}),
        "Stage": {
            "Type": "AWS::ApiGateway::Stage",
            "Properties": {"RestApiId": {"Ref": "Api"}, "StageName": "v1"},
        },
    },
    "Outputs": {
        "ApiUrl": {
            "Value": {
                "Fn::Join": [
                    "",
                    [
                        "https://",
                        {"Ref": "Api"},
                        ".execute-api.",
                        {"Ref": "AWS::Region"},
                        ".",
                        {"Ref": "AWS::URLSuffix"},
                        "/",
                        {"Ref": "Stage"},
                        "/",
                    ],
                ]
            }
        },
        "Other": {"Value": "kept"},
    },
}


def test_routes_are_the_templates_methods_with_their_paths_and_functions():
    # Given the stack as deployed, moto having named the API a1b2c3
    stack = DeployedStack("CloudSniper-Approvals", TEMPLATE, physical_ids={"Api": "a1b2c3"})

    # When its routes are read, then each method is there, on its stage, with its function
    routes = routes_of([stack])

    assert sorted(routes, key=lambda route: route.http_method) == [
        Route("a1b2c3", "v1", "GET", "/approvals", "AWS_IAM", "cloud-sniper-approvals"),
        Route(
            "a1b2c3", "v1", "POST", "/approvals/{id}/approve", "AWS_IAM", "cloud-sniper-approvals"
        ),
    ]


def test_a_method_of_another_integration_is_not_served():
    template = copy.deepcopy(TEMPLATE)
    template["Resources"]["ListMethod"]["Properties"]["Integration"] = {"Type": "MOCK"}

    routes = routes_of([DeployedStack("s", template, physical_ids={"Api": "a1b2c3"})])

    assert [route.http_method for route in routes] == ["POST"]


def test_a_route_matches_its_method_and_path_and_names_the_path_parameters():
    route = Route("a1b2c3", "v1", "POST", "/approvals/{id}/approve", "AWS_IAM", "f")

    assert route.match("POST", "/approvals/apr-1/approve") == {"id": "apr-1"}
    assert route.match("POST", "/approvals/apr%2F1/approve") == {"id": "apr/1"}
    assert route.match("GET", "/approvals/apr-1/approve") is None
    assert route.match("POST", "/approvals/apr-1/deny") is None
    assert route.match("POST", "/approvals//approve") is None


def test_the_url_output_points_at_the_local_server_keeping_the_api_and_its_stage():
    local = local_outputs(TEMPLATE, "http://127.0.0.1:4567/")

    assert local["Outputs"]["ApiUrl"]["Value"] == {
        "Fn::Join": ["", ["http://127.0.0.1:4567/", {"Ref": "Api"}, "/v1/"]]
    }
    assert local["Outputs"]["Other"] == {"Value": "kept"}
    assert TEMPLATE["Outputs"]["ApiUrl"]["Value"]["Fn::Join"][1][0] == "https://"
