"""The names the sample world uses: event names, milestones, outcomes, playbooks, attributes, plans.

Sample rules (sql_rules/) are written against these; the shares and day ranges shape generate.py's world.
Custom attributes: user `timezone` (90% of users, IANA names) and `plan_tier` (starter|growth|enterprise);
account `health_score` (integer text 0-100 that moves daily; 3% are 'n/a'), `nps` (integer text -60..90,
60% of accounts) and `industry`.
"""

EVENT_WEIGHTS = {
    "login": 14, "dashboard_viewed": 12, "feature_used": 10, "report_viewed": 8, "api_call": 6,
    "search_performed": 5, "report_created": 4, "task_completed": 4, "logout": 4, "export_csv": 3,
    "integration_sync": 3, "alert_triggered": 3, "comment_added": 3, "notification_clicked": 3,
    "report_shared": 2, "invite_sent": 2, "alert_created": 2, "file_uploaded": 2,
    "help_article_viewed": 2, "onboarding_step_completed": 2, "invite_accepted": 1, "export_pdf": 1,
    "integration_connected": 1, "settings_updated": 1, "profile_updated": 1, "workspace_created": 1,
    "project_created": 1, "billing_viewed": 1, "plan_upgraded": 1, "support_ticket_opened": 1,
}
EVENT_NAMES = tuple(EVENT_WEIGHTS)
FEATURE_EVENTS = ("feature_used", "dashboard_viewed", "report_viewed", "report_created", "report_shared",
                  "export_csv", "export_pdf", "alert_created", "alert_triggered", "api_call")
FEATURES = ("dashboards", "exports", "alerts", "api")
TIMEZONES = ("UTC", "Europe/Paris", "Europe/London", "Europe/Berlin", "America/New_York", "America/Chicago",
             "America/Los_Angeles", "America/Sao_Paulo", "Asia/Tokyo", "Asia/Singapore", "Asia/Kolkata",
             "Australia/Sydney")
FIRST_NAMES = ("Alice", "Bruno", "Chloe", "David", "Emma", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Karin",
               "Liam", "Maya", "Nils", "Olivia", "Pablo", "Quinn", "Rosa", "Sami", "Tara")
LAST_NAMES = ("Martin", "Smith", "Garcia", "Muller", "Rossi", "Nguyen", "Kowalski", "Silva", "Tanaka",
              "Dubois", "Johnson", "Novak", "Haddad", "Larsen", "Okafor", "Schmidt")
COMPANIES = ("Acme", "Globex", "Initech", "Umbrella", "Northwind", "Contoso", "Hooli", "Stark", "Wayne",
             "Wonka", "Tyrell", "Cyberdyne", "Vandelay", "Aperture", "Oscorp", "Pied Piper")
COMPANY_SUFFIXES = ("Inc", "Labs", "GmbH", "Ltd", "Group", "Systems", "Analytics", "Health")
PLANS = {"Starter": 15.0, "Growth": 35.0, "Enterprise": 75.0}  # core plan -> unit price per seat
ADD_ONS = {"Analytics Add-on": 10.0, "API Access": 20.0, "Premium Support": 8.0}
INDUSTRIES = ("software", "fintech", "healthcare", "retail", "education", "manufacturing")
CSMS, SALES_MANAGERS = 12, 6
# (name, share of accounts, earliest and latest day after the account's creation)
MILESTONES = (("first_report", 0.85, 1, 20), ("first_dashboard_shared", 0.7, 2, 40),
              ("integration_live", 0.6, 5, 60), ("onboarding_complete", 0.7, 10, 45),
              ("api_connected", 0.35, 3, 90), ("10_users_active", 0.5, 10, 120))
OUTCOMES = (("adoption_goal_met", 0.4, 20, 150), ("expanded", 0.2, 60, 330),
            ("churn_risk_resolved", 0.15, 30, 360))  # plus `renewed`, on the renewal date
# (playbook, share of accounts, anchor (account `created` | core subscription `renewal`),
#  enrolled from/to days after the anchor, due after days, share completed, completed from/to days after)
PLAYBOOKS = (("onboarding", 1.0, "created", 0, 2, 30, 0.8, 5, 45),
             ("adoption_push", 0.3, "created", 30, 90, 45, 0.6, 10, 60),
             ("risk_mitigation", 0.15, "created", 30, 360, 21, 0.5, 5, 40),
             ("renewal_prep", 1.0, "renewal", -60, -55, 53, 0.6, 10, 55))
