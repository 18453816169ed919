"""Who may call the API: a Cognito user pool whose ID tokens API Gateway checks."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cognito as cognito
from constructs import Construct


class Users(Construct):
    """Users are invited by an administrator (no self sign-up), sign in with e-mail and password
    plus a TOTP code, and get a 1-hour ID token the CLI sends as its Bearer token.

    The app client has no secret (the CLI cannot keep one) and allows USER_PASSWORD_AUTH, so
    ``aws cognito-idp initiate-auth`` can sign in from a terminal (docs/deploy.md).
    """

    def __init__(self, scope: Construct, id: str) -> None:
        super().__init__(scope, id)
        self.pool = cognito.UserPool(
            self,
            "Pool",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            # Whoever holds a token reads and writes every dataset of its owner.
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            # Threat protection (compromised credentials, risky sign-ins) needs the Plus plan.
            feature_plan=cognito.FeaturePlan.PLUS,
            standard_threat_protection_mode=cognito.StandardThreatProtectionMode.FULL_FUNCTION,
            deletion_protection=True,
            # The owners of the datasets: deleting the stack must not delete them.
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.client = self.pool.add_client(
            "Cli",
            generate_secret=False,
            # Tokens come from InitiateAuth, never from a hosted page's redirect.
            disable_o_auth=True,
            auth_flows=cognito.AuthFlow(user_password=True, user_srp=True),
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
            prevent_user_existence_errors=True,
        )
